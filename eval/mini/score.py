"""Scores and errors of the miniature reproduction, as lmms-eval scores the real benchmarks.

A model's score per question is the value lmms-eval itself logged for it (`--log_samples`), with the scorer
of the task each kind stands in for (`SCORERS`): ScienceQA-IMG's option letter, TextVQA's VQA accuracy
after the EvalAI answer normalisation, POPE's and MME's yes/no, GQA's exact match (case and punctuation
ignored), and MM-Vet's judge, the one lenient scorer because MM-Vet has one (offline, the rule-based stand-in
`eval.mini_judge`, which also docks extra list items). The rule-based floors that are not models (the
question-only prior) are scored by the same functions (`score`), so every row of a table is on one scale.

Errors respect how the questions cluster: each scene asks ≈ 6.5 of them, so the standard errors are a
bootstrap over scenes (`clustered_se`, `paired_difference`), not over questions.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from .world import COLOURS, KINDS, NUMBERS, SHAPES, WORDS

__all__ = [
    "SCORERS",
    "chance",
    "clustered_se",
    "lmms_row",
    "paired_difference",
    "question_only_prior",
    "read_samples",
    "scene_clusters",
    "score",
    "template",
]

SCORERS = {  # kind → the lmms-eval scorer its scores come from
    "sqa": "ScienceQA-IMG: the option letter (scienceqa.utils.sqa_process_results)",
    "text": "TextVQA: VQA accuracy after the EvalAI answer normalisation (textvqa.utils.textvqa_process_results)",
    "pope": "POPE: yes/no, exact (pope.utils.pope_process_results)",
    "mme": "MME: yes/no from the answer's start (mme.utils.parse_pred_ans)",
    "open": "MM-Vet: judge score 0–1 (mmvet.utils.mmvet_process_results; offline judge eval.mini_judge)",
    "gqa": "GQA: exact match, case and punctuation ignored (lmms-eval's exact_match)",
}
BOOTSTRAP_DRAWS = 2000

_MASK = re.compile(r"\b(" + "|".join([*COLOURS, *SHAPES, *NUMBERS, *(w.lower() for w in WORDS)]) + r")s?\b")


def lmms_row(kind: str, q: dict, i: int = 0, image=None) -> dict:
    """The lmms-eval row (doc) of question `q`, the `i`-th of its kind in its split, as eval.mini.tasks writes it."""
    row = {"image": image, "question": q["raw"]}
    if kind == "sqa":
        return {**row, "choices": q["choices"], "answer": q["answer_index"], "hint": ""}
    row["answer"] = q["answer"]
    if kind == "text":
        return {**row, "question_id": i, "answers": [q["answer"]] * 10, "ocr_tokens": [q["answer"].upper()]}
    if kind == "pope":
        return {**row, "question_id": str(i), "category": "random"}
    if kind == "mme":
        return {**row, "question_id": q["pair"], "category": q["category"]}
    if kind == "open":
        return {**row, "question_id": f"mw_{i}", "capability": "rec"}
    return {**row, "id": str(i), "imageId": q.get("image", "")}


def score(kind: str, q: dict, response: str, i: int = 0) -> float:
    """lmms-eval's score of `response` to question `q` of `kind` (the scorer of SCORERS[kind])."""
    doc = lmms_row(kind, q, i)
    if kind == "sqa":
        from lmms_eval.tasks.scienceqa.utils import sqa_process_results

        return float(sqa_process_results(doc, [response])["exact_match"])
    if kind == "text":
        from lmms_eval.tasks.textvqa.utils import textvqa_process_results

        return float(textvqa_process_results(doc, [response])["exact_match"])
    if kind == "pope":
        from lmms_eval.tasks.pope.utils import pope_process_results

        return float(pope_process_results(doc, [response])["pope_accuracy"]["score"])
    if kind == "mme":
        from lmms_eval.tasks.mme.utils import mme_process_results

        return float(next(iter(mme_process_results(doc, [response]).values()))["score"])
    if (
        kind == "open"
    ):  # the row lmms-eval's MM-Vet scorer ends its judge prompt with, graded by the offline judge
        from eval.mini_judge import grade

        truth = doc["answer"].replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
        return grade(f"{doc['question']} | {truth} | {response} |")
    if kind == "gqa":
        from lmms_eval.api.metrics import exact_match_hf_evaluate

        result = exact_match_hf_evaluate(
            [response], [doc["answer"]], ignore_case=True, ignore_punctuation=True
        )
        return float(result["exact_match"])
    raise ValueError(f"unknown question kind {kind!r} (one of {KINDS})")


def _logged_score(kind: str, sample: dict, where: str) -> float:
    """The score lmms-eval logged for one sample of a kind's task."""
    if kind in ("sqa", "text", "gqa"):
        value = sample.get("exact_match")
    elif kind == "pope":
        value = (sample.get("pope_accuracy") or {}).get("score")
    elif kind == "mme":
        logged = sample.get("mme_perception_score") or sample.get("mme_cognition_score") or {}
        value = logged.get("score")
    else:
        value = (sample.get("gpt_eval_score") or {}).get("score")
    if value is None:
        raise ValueError(f"{where}: sample {sample.get('doc_id')} has no logged {kind} score")
    return float(value)


def read_samples(folder: str | Path, split: str = "test", variant: str = "") -> dict[str, list[float]]:
    """kind → lmms-eval's score per question (in the split's question order) from the `--log_samples` files
    of the split's tasks (mw_* for test, mwval_* for val; `variant` "shuffled" or "blank" for the controls)."""
    from .tasks import PREFIX

    prefix = PREFIX[split]
    pattern = re.compile(rf"_samples_{prefix}_([a-z]+)" + (f"_{variant}" if variant else "") + r"\.jsonl$")
    files = [f for f in sorted(Path(folder).rglob(f"*_samples_{prefix}_*.jsonl")) if pattern.search(f.name)]
    if not files:
        tasks = f"{prefix}_*" + (f"_{variant}" if variant else "")
        raise FileNotFoundError(f"{folder}: no {tasks} sample files (run lmms-eval with --log_samples)")
    out: dict[str, list[float]] = {}
    for f in files:
        kind = pattern.search(f.name).group(1)
        samples = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        samples.sort(key=lambda s: s.get("doc_id", 0))  # the split's question order: paired comparisons
        out[kind] = [_logged_score(kind, s, str(f)) for s in samples]
    return out


def scene_clusters(questions: list[dict]) -> dict[str, list[str]]:
    """kind → the scene (image) of each question, in the order of read_samples."""
    out: dict[str, list[str]] = defaultdict(list)
    for q in questions:
        out[q["kind"]].append(q["image"])
    return dict(out)


def template(question: str) -> str:
    """The question with its content words masked (options too), e.g. 'is there a _ _ in the image'."""
    return _MASK.sub("_", question.lower().split("\na.")[0])


def question_only_prior(train: list[dict], test: list[dict]) -> dict[str, list[float]]:
    """kind → score of answering each question of `test` with its template's commonest training answer."""
    by_template: dict[tuple, Counter] = defaultdict(Counter)
    for q in train:
        by_template[(q["kind"], template(q["question"]))][q["answer"]] += 1
    out: dict[str, list[float]] = defaultdict(list)
    for q in test:
        kind = q["kind"]
        counts = by_template.get((kind, template(q["question"])))
        guess = counts.most_common(1)[0][0] if counts else ""
        out[kind].append(score(kind, q, _styled(kind, guess), len(out[kind])))
    return dict(out)


def chance(train: list[dict], test: list[dict]) -> dict[str, float]:
    """kind → expected accuracy of a uniform guess among the answers its template takes in training."""
    answers: dict[tuple, set] = defaultdict(set)
    for q in train:
        answers[(q["kind"], template(q["question"]))].add(q["answer"])
    acc: dict[str, list[float]] = defaultdict(list)
    for q in test:
        options = answers.get((q["kind"], template(q["question"])))
        acc[q["kind"]].append(1.0 / len(options) if options else 0.0)
    return {k: sum(v) / len(v) for k, v in acc.items()}


def _styled(kind: str, answer: str) -> str:
    if kind == "open":
        return answer.replace("<AND>", " and ")
    return answer


def _flatten(
    values: dict[str, list[float]], clusters: dict[str, list[str]], kinds
) -> tuple[np.ndarray, np.ndarray]:
    xs, ids = [], []
    for k in kinds:
        if len(values[k]) != len(clusters[k]):
            raise ValueError(
                f"{k}: {len(values[k])} scores for {len(clusters[k])} questions; not the same questions"
            )
        xs += values[k]
        ids += clusters[k]
    if not xs:
        raise ValueError("no questions")
    _, index = np.unique(np.array(ids), return_inverse=True)
    return np.asarray(xs, dtype=float), index


def clustered_se(
    values: dict[str, list[float]],
    clusters: dict[str, list[str]],
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> float:
    """Standard error of the mean score over all questions of `values` (kind → per-question scores), by a
    bootstrap that resamples scenes (`clusters`: kind → each question's scene) with their questions."""
    x, index = _flatten(values, clusters, [k for k in KINDS if k in values])
    sums = np.bincount(index, weights=x)
    counts = np.bincount(index).astype(float)
    n = len(sums)
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=draws).astype(float)
    means = (weights @ sums) / (weights @ counts)
    return float(means.std(ddof=1))


def paired_difference(
    a: dict[str, list[float]], b: dict[str, list[float]], clusters: dict[str, list[str]], seed: int = 0
) -> tuple[float, float]:
    """Mean score of a minus b over the same questions (the kinds both have), and its scene-clustered
    bootstrap standard error."""
    kinds = [k for k in KINDS if k in a and k in b]
    if not kinds:
        raise ValueError("no question kind in common")
    for k in kinds:
        if len(a[k]) != len(b[k]):
            raise ValueError(f"{k}: {len(a[k])} vs {len(b[k])} answers; not the same questions")
    diffs = {k: [x - y for x, y in zip(a[k], b[k], strict=True)] for k in kinds}
    x, _ = _flatten(diffs, clusters, kinds)
    return float(x.mean()), clustered_se(diffs, clusters, seed=seed)
