"""One accuracy scale for every model, baseline and control of the miniature reproduction.

lmms-eval's official metrics (exact match, POPE F1, MME acc + acc+, judge scores) are kept in the results
too, but they are not on one scale; here a question is right or wrong:
sqa → the option letter; text / gqa → the word; pope / mme → yes or no; open → every `<AND>` part present.
`question_only_prior` answers each test question with the most frequent training answer of its template
(the question with colours, shapes, words and numbers masked): what a model can reach without looking.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

from .world import COLOURS, NUMBERS, SHAPES, WORDS

__all__ = [
    "accuracy_table",
    "chance",
    "correct",
    "paired_difference",
    "question_only_prior",
    "read_samples",
    "template",
]

_MASK = re.compile(r"\b(" + "|".join([*COLOURS, *SHAPES, *NUMBERS, *(w.lower() for w in WORDS)]) + r")s?\b")


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def correct(kind: str, answer: str, response: str) -> bool:
    """Whether `response` answers a question of `kind` whose true answer is `answer`."""
    words = _words(response)
    if not words:
        return False
    if kind == "sqa":
        return response.strip()[:1].upper() == answer
    if kind in ("pope", "mme"):
        return words[0] == answer.lower()
    if kind == "open":
        return all(part.lower() in words for part in answer.split("<AND>"))
    return words[0] == answer.lower() or " ".join(words) == answer.lower()


def template(question: str) -> str:
    """The question with its content words masked (options too), e.g. 'is there a _ _ in the image'."""
    return _MASK.sub("_", question.lower().split("\na.")[0])


def question_only_prior(train: list[dict], test: list[dict]) -> dict[str, list[bool]]:
    """kind → correctness of answering each test question with its template's commonest training answer."""
    by_template: dict[str, Counter] = defaultdict(Counter)
    for q in train:
        by_template[(q["kind"], template(q["question"]))][q["answer"]] += 1
    out: dict[str, list[bool]] = defaultdict(list)
    for q in test:
        counts = by_template.get((q["kind"], template(q["question"])))
        guess = counts.most_common(1)[0][0] if counts else ""
        out[q["kind"]].append(correct(q["kind"], q["answer"], _styled(q["kind"], guess)))
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


def read_samples(folder: str | Path, shuffled: bool = False) -> dict[str, list[bool]]:
    """kind → correctness per question from lmms-eval `--log_samples` files of the mw_* tasks (the
    mw_*_shuffled control tasks with `shuffled`)."""
    out: dict[str, list[bool]] = defaultdict(list)
    pattern = re.compile(r"_samples_mw_([a-z]+)" + ("_shuffled" if shuffled else "") + r"\.jsonl$")
    files = [f for f in sorted(Path(folder).rglob("*_samples_mw_*.jsonl")) if pattern.search(f.name)]
    if not files:
        raise FileNotFoundError(f"{folder}: no mw_* sample files (run lmms-eval with --log_samples)")
    for f in files:
        kind = pattern.search(f.name).group(1)
        samples = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        for s in sorted(samples, key=lambda s: s.get("doc_id", 0)):  # test order: paired comparisons
            resp = s.get("filtered_resps", s.get("resps"))
            while isinstance(resp, list):
                resp = resp[0] if resp else ""
            out[kind].append(correct(kind, str(s["target"]), str(resp)))  # sqa's target is the letter
    return dict(out)


def paired_difference(a: dict[str, list[bool]], b: dict[str, list[bool]]) -> tuple[float, float]:
    """Overall accuracy of a minus b over the same questions, and its paired standard error."""
    diffs = []
    for kind in sorted(set(a) & set(b)):
        if len(a[kind]) != len(b[kind]):
            raise ValueError(f"{kind}: {len(a[kind])} vs {len(b[kind])} answers; not the same questions")
        diffs += [int(x) - int(y) for x, y in zip(a[kind], b[kind], strict=True)]
    if not diffs:
        raise ValueError("no question kind in common")
    n = len(diffs)
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / max(1, n - 1)
    return mean, math.sqrt(var / n)


def accuracy_table(runs: dict[str, dict[str, list[bool]]], kinds: list[str]) -> tuple[list[str], list[list]]:
    """Rows of '<accuracy %> ± <standard error>' per kind and overall (mean over all questions)."""
    headers = ["model", *kinds, "all"]
    rows = []
    for name, res in runs.items():
        row = [name]
        every = []
        for k in kinds:
            vals = res.get(k, [])
            every += vals
            row.append(_fmt(vals))
        row.append(_fmt(every))
        rows.append(row)
    return headers, rows


def _fmt(vals: list[bool]) -> str:
    if not vals:
        return "–"
    p = sum(vals) / len(vals)
    return f"{100 * p:.1f} ± {100 * math.sqrt(p * (1 - p) / len(vals)):.1f}"
