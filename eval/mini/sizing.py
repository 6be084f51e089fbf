"""The miniature's sizing check: candidate sizes against the larger ones, on seed 0's validation questions.

    python -m eval.mini.sizing --larger outputs/mini_repro_larger --candidate outputs/mini_repro \\
        --results eval/results/mini_sizing

Both folders are OUTs of scripts/mini_repro.sh over the same world, teacher, splats and LM, one at each
size. The rule was fixed before either run (docs/mini.md, "The sizing check"): the candidate is adopted
when (1) every model scores at least its larger-size counterpart − 1.5 points over all validation
questions, and (2) every target the larger sizes meet on validation (point estimates) the candidate meets
too. Test scores are not read. Writes <results>.md and .json, with each OUT's measured stage times beside.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .report import PRIOR, _checks, _mean_over, _pick, _split, _timings
from .score import paired_difference

TOLERANCE = 1.5  # points a model may lose at the candidate sizes (rule 1)
SEED_STAGES = ("GS encoder", "zero-shot", "LLaVA", "lmms-eval")  # stages run once per seed


def validation(out: Path) -> dict:
    """One OUT's seed-0 validation scores: label → kind → per-question scores, with clusters and chance."""
    if not any(p.is_dir() for p in (out / "vqa").glob("*")):
        raise FileNotFoundError(
            f"{out}: no lmms-eval results under vqa/; run scripts/mini_repro.sh to its end"
        )
    train = json.loads((out / "data" / "train_questions.json").read_text())
    return _split(out, [out], "val", train)


def target_points(res: dict, chance: dict) -> list[dict]:
    """The model-vs-model targets (each model vs the blind floor, GS vs RGB, K vs 2K tokens) as point
    estimates on one split's scores: the difference in points and whether it lies within the target."""
    rows = []
    for c in _checks([label for label in res if label != PRIOR], chance):
        if not isinstance(c.b, str):  # reading vs chance and the stretch score are not part of the rule
            continue
        d = 100 * (_mean_over(_pick(res, c.a, c.kind)) - _mean_over(_pick(res, c.b, c.kind)))
        met = d >= c.threshold and (c.upper is None or d <= c.upper)
        rows.append({"comparison": c.name, "points": d, "target": c.target, "met": met})
    return rows


def compare_models(larger: dict, candidate: dict, clusters: dict) -> list[dict]:
    """Rule 1 on two validation score sets (label → kind → per-question scores): each model's score at
    both sizes, the paired difference with its scene-clustered s.e., and whether it is within TOLERANCE."""
    if set(larger) != set(candidate):
        raise ValueError(f"the two runs hold different models: {sorted(larger)} vs {sorted(candidate)}")
    models = []
    for label in larger:
        if label == PRIOR:
            continue
        d, se = paired_difference(candidate[label], larger[label], clusters)
        a, b = _mean_over(larger[label]), _mean_over(candidate[label])
        models.append(
            {
                "model": label,
                "larger": 100 * a,
                "candidate": 100 * b,
                "points": 100 * d,
                "se": 100 * se,
                "kept": 100 * d >= -TOLERANCE,
            }
        )
    return models


def verdict(
    models: list[dict], larger_targets: list[dict], candidate_targets: list[dict]
) -> tuple[bool, list[str]]:
    """Whether the candidate is adopted (rules 1 and 2), and why not: each failed condition named."""
    reasons = [
        f"{m['model']}: {m['points']:+.1f} points at the candidate sizes (allowed ≥ −{TOLERANCE:g})"
        for m in models
        if not m["kept"]
    ]
    cand = {t["comparison"]: t for t in candidate_targets}
    for t in larger_targets:
        c = cand.get(t["comparison"])
        if t["met"] and (c is None or not c["met"]):
            got = "absent" if c is None else f"{c['points']:+.1f}"
            reasons.append(
                f"{t['comparison']}: met at the larger sizes ({t['points']:+.1f}), not at the candidate ({got})"
            )
    return not reasons, reasons


def stage_minutes(out: Path) -> tuple[dict[str, float], int]:
    """Measured minutes per stage of an OUT's last invocation (timings.tsv; a stage skipped as already
    done is left out), and how many stages it skipped."""
    _, _, t = _timings(out)
    if not t:
        return {}, 0
    skipped = set(t["skipped_stages"])
    return {label: s / 60 for label, s in t["stages"].items() if label not in skipped}, t["skipped"]


def _per_seed(minutes: dict[str, float]) -> float:
    return sum(v for k, v in minutes.items() if k.startswith(SEED_STAGES))


def _time_rows(larger: Path, candidate: Path) -> tuple[list[list], dict]:
    """Minutes per stage of both runs side by side, their per-seed sums, and (when the candidate ran its
    shared stages) the one- and three-seed totals derived from them."""
    a, skipped_a = stage_minutes(larger)
    b, skipped_b = stage_minutes(candidate)
    labels = [*b, *(x for x in a if x not in b)]
    rows = [[x, *(f"{m[x]:.1f}" if x in m else "–" for m in (a, b))] for x in labels]
    seed_a, seed_b = _per_seed(a), _per_seed(b)
    rows.append(["**stages run once per seed**", f"**{seed_a:.1f}**", f"**{seed_b:.1f}**"])
    shared = None if skipped_b else sum(v for k, v in b.items() if not k.startswith(SEED_STAGES))
    if shared is not None:  # derived: the candidate's shared stages + k × a seed's stages
        for k in (1, 3):
            what = f"derived: the shared stages ({shared:.1f}) + {k} × a seed's stages"
            rows.append([what, f"{shared + k * seed_a:.1f}", f"{shared + k * seed_b:.1f}"])
    times = {
        "larger": a,
        "candidate": b,
        "per_seed": {"larger": seed_a, "candidate": seed_b},
        "skipped": {"larger": skipped_a, "candidate": skipped_b},
        "shared": shared,
    }
    return rows, times


def build(larger: Path, candidate: Path) -> tuple[list[str], dict]:
    va, vb = validation(larger), validation(candidate)
    qa = (larger / "data" / "val_questions.json").read_bytes()
    if qa != (candidate / "data" / "val_questions.json").read_bytes():
        raise ValueError(
            f"{larger} and {candidate} hold different validation questions; both need the same world"
        )
    res_a, res_b = va["per_seed"][0], vb["per_seed"][0]
    models = compare_models(res_a, res_b, va["clusters"])
    ta, tb = target_points(res_a, va["chance"]), target_points(res_b, vb["chance"])
    adopted, reasons = verdict(models, ta, tb)
    from gs_encoder.report import markdown_table

    m_rows = [
        [
            m["model"],
            f"{m['larger']:.1f}",
            f"{m['candidate']:.1f}",
            f"{m['points']:+.1f} ± {m['se']:.1f}",
            "yes" if m["kept"] else "no",
        ]
        for m in models
    ]
    cand = {t["comparison"]: t for t in tb}
    t_rows = [
        [
            t["comparison"],
            t["target"],
            f"{t['points']:+.1f}",
            "yes" if t["met"] else "no",
            f"{cand[t['comparison']]['points']:+.1f}",
            "yes" if cand[t["comparison"]]["met"] else "no",
        ]
        for t in ta
    ]
    time_rows, times = _time_rows(larger, candidate)
    n_q = sum(va["counts"].values())
    lines = [
        "## Validation score over all questions (%, seed 0)",
        "",
        f"{n_q} validation questions of {va['scenes']} scenes; the difference is paired over the same questions, "
        "± one scene-clustered bootstrap s.e.",
        "",
        markdown_table(
            ["model", "larger sizes", "candidate", "candidate − larger", f"kept (≥ −{TOLERANCE:g})"], m_rows
        ),
        "",
        "## Targets on validation (point estimates)",
        "",
        markdown_table(["comparison", "target", "larger: points", "met", "candidate: points", "met"], t_rows),
        "",
        "## Decision",
        "",
        "The candidate sizes are **adopted** as the defaults."
        if adopted
        else "The candidate sizes are **not adopted**: " + "; ".join(reasons) + ".",
        "",
        "## Measured minutes per stage",
        "",
        "Each folder's last invocation of scripts/mini_repro.sh; a stage skipped as already done shows –. "
        "The derived rows add measured stage times; they are not a timed run.",
        "",
        markdown_table(["stage", "larger sizes", "candidate"], time_rows),
        "",
    ]
    data = {
        "validation_questions": n_q,
        "validation_scenes": va["scenes"],
        "tolerance_points": TOLERANCE,
        "models": models,
        "targets": {"larger": ta, "candidate": tb},
        "adopted": adopted,
        "reasons": reasons,
        "minutes": times,
    }
    return lines, data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--larger", required=True, type=Path, help="OUT of the run at the larger sizes")
    ap.add_argument("--candidate", required=True, type=Path, help="OUT of the run at the candidate sizes")
    ap.add_argument("--larger-command", default="", help="the command of the larger run, as recorded")
    ap.add_argument("--candidate-command", default="", help="the command of the candidate run, as recorded")
    ap.add_argument("--results", required=True, help="path without extension for .md/.json")
    args = ap.parse_args(argv)
    try:
        lines, data = build(args.larger, args.candidate)
    except (FileNotFoundError, ValueError) as e:
        print(f"sizing: {e}", file=sys.stderr)
        return 2
    from gs_encoder.report import machine_info

    info = machine_info()
    head = [
        "# The miniature's sizing check (validation only)",
        "",
        'The rule, fixed before either run: docs/mini.md, "The sizing check". Larger sizes: '
        f"`{args.larger_command or args.larger}`; candidate: `{args.candidate_command or args.candidate}`. "
        f"Reported {info['date']} on {info['cpu']}, commit {info['git']}.",
        "",
    ]
    res = Path(args.results)
    res.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(head + lines)
    res.with_suffix(".md").write_text(text)
    payload = {"larger": str(args.larger), "candidate": str(args.candidate), "machine": info, **data}
    res.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
