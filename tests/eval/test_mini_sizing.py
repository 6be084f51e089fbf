"""The miniature's sizing check (eval.mini.sizing): the rule fixed in docs/mini.md, on made-up validation scores."""

import pytest

from eval.mini.sizing import TOLERANCE, compare_models, target_points, verdict

N = 400
CLUSTERS = {"pope": [f"scene{i // 4}" for i in range(N)]}  # four questions per scene
BLIND = "blind GS-LLaVA n144-k64 (one blank image)"


def _right(k: int) -> dict[str, list[float]]:
    return {"pope": [float(i < k) for i in range(N)]}


def _scores(rgb: int, n144: int, n64: int, k32: int, blind: int = 160) -> dict:
    return {
        "question-only prior": _right(150),
        "RGB-LLaVA": _right(rgb),
        "GS-LLaVA n144-k64": _right(n144),
        "GS-LLaVA n64-k64": _right(n64),
        "GS-LLaVA n144-k32": _right(k32),
        BLIND: _right(blind),
    }


def _decide(larger: dict, candidate: dict) -> tuple[bool, list[str]]:
    models = compare_models(larger, candidate, CLUSTERS)
    return verdict(models, target_points(larger, {}), target_points(candidate, {}))


def test_the_candidate_is_adopted_when_no_model_loses_more_than_the_tolerance_and_no_target_is_lost():
    larger = _scores(rgb=280, n144=280, n64=272, k32=276)
    candidate = _scores(rgb=276, n144=279, n64=270, k32=275)  # at most 1 point lower (4 of 400)
    adopted, reasons = _decide(larger, candidate)
    assert adopted and reasons == []
    rgb = next(m for m in compare_models(larger, candidate, CLUSTERS) if m["model"] == "RGB-LLaVA")
    assert rgb["points"] == pytest.approx(-1.0) and rgb["se"] > 0 and rgb["kept"]


def test_a_model_that_loses_more_than_the_tolerance_rejects_the_candidate_by_name():
    larger = _scores(rgb=280, n144=280, n64=272, k32=276)
    candidate = _scores(rgb=280, n144=272, n64=272, k32=276)  # GS n144-k64: −2 points
    assert TOLERANCE < 2
    adopted, reasons = _decide(larger, candidate)
    assert not adopted
    assert any(r.startswith("GS-LLaVA n144-k64: -2.0 points") for r in reasons)


def test_a_target_met_at_the_larger_sizes_and_lost_at_the_candidate_rejects_it():
    larger = _scores(rgb=280, n144=280, n64=272, k32=276)
    # every model within 1.5 points, but K = 32 − K = 64 moves from −1 to −3.25: out of ±3
    candidate = _scores(rgb=280, n144=280, n64=272, k32=267)
    adopted, reasons = _decide(larger, candidate)
    assert not adopted
    # the K = 32 model lost 2.25 points, and two targets: K = 32 vs 64, and GS vs RGB (−3.25)
    assert reasons[0].startswith("GS-LLaVA n144-k32: -2.2") and len(reasons) == 3
    assert any(r.startswith("N = 144: K = 32 − K = 64 tokens: met at the larger sizes") for r in reasons)
    assert any(r.startswith("GS-LLaVA n144-k32 − RGB-LLaVA: met at the larger sizes (-1.0)") for r in reasons)


def test_a_target_the_larger_sizes_miss_does_not_hold_the_candidate_back():
    larger = _scores(rgb=280, n144=280, n64=252, k32=276)  # GS n64 − RGB = −7: missed at both sizes
    candidate = _scores(rgb=280, n144=280, n64=251, k32=276)
    points = {t["comparison"]: t for t in target_points(larger, {})}
    assert not points["GS-LLaVA n64-k64 − RGB-LLaVA"]["met"]
    assert points[f"RGB-LLaVA − {BLIND}"]["points"] == pytest.approx(30.0)
    assert _decide(larger, candidate) == (True, [])


def test_the_two_runs_must_hold_the_same_models():
    larger = _scores(rgb=280, n144=280, n64=272, k32=276)
    candidate = {k: v for k, v in larger.items() if k != BLIND}
    with pytest.raises(ValueError, match="different models"):
        compare_models(larger, candidate, CLUSTERS)


def test_the_command_names_a_folder_without_results(tmp_path, capsys):
    from eval.mini.sizing import main

    (tmp_path / "a" / "data").mkdir(parents=True)
    (tmp_path / "a" / "data" / "train_questions.json").write_text("[]")
    (tmp_path / "a" / "data" / "val_questions.json").write_text("[]")
    code = main(
        [
            "--larger",
            str(tmp_path / "a"),
            "--candidate",
            str(tmp_path / "b"),
            "--results",
            str(tmp_path / "r"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "sizing:" in err and str(tmp_path / "a") in err
    assert not (tmp_path / "r.md").exists()
