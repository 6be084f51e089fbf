"""The convergence benchmark's accounting, on a synthetic run: iterations to the target interpolated
between budgets, the init's cost, and a coarse-to-fine iteration counted at its measured cost."""

import json
from datetime import UTC, datetime

import pytest

from eval.bench import fit_convergence as fc


def _entry(psnr: dict, seconds: dict) -> dict:
    return {"psnr": psnr, "seconds": seconds, "per_image": {k: [v] * 4 for k, v in psnr.items() if k}}


def _run(c2f_psnr_at_10: float) -> dict:
    budgets = [10, 30]
    secs = {0: 0.4, 10: 1.0, 30: 3.0}  # K = 0: 0.1 s per photo = 10 fit iterations of 0.01 s
    return {
        "size": 48,
        "photos": ["astronaut", "chelsea", "coffee", "rocket"],
        "ns": [16],
        "budgets": budgets,
        "inits": ["structured", "learned", "learned+c2f"],
        "threads": 1,
        "optimiser": fc.optimiser_settings(fc.FitConfig(init="structured")),
        "learned_init": {"weights_id": "0123456789ab", "passes": 3},
        "measured": datetime(2026, 12, 3, tzinfo=UTC).isoformat(),
        "fits": {
            "structured/16": _entry({0: 20.0, 10: 24.0, 30: 26.0}, {0: 0.0, 10: 1.0, 30: 3.0}),
            "learned/16": _entry({0: 23.0, 10: 26.5, 30: 27.0}, secs),
            # the same init measured again: its K = 0 time is noise and must not count
            "learned+c2f/16": _entry({0: 23.0, 10: c2f_psnr_at_10, 30: 27.5}, {**secs, 0: 0.04}),
        },
        "network_cost": {16: {"network_s": 0.01, "learned_init_s": 0.05, "fit20_s": 0.2, "coarse20_s": 0.1}},
    }


@pytest.mark.parametrize(("c2f_at_10", "faster"), [(27.0, False), (30.0, True)])
def test_coarse_to_fine_is_charged_for_its_coarse_iterations(tmp_path, c2f_at_10, faster):
    fc.report(_run(c2f_at_10), "conv", out_dir=tmp_path)
    out = json.loads((tmp_path / "conv.json").read_text())["coarse_to_fine"]["learned/16"]
    # learned reaches structured@30 (26 dB) after 10·3/3.5 = 8.57 iterations, + 10 for the init
    assert out["speedup_without"] == pytest.approx(30 / (10 * 3 / 3.5 + 10))
    # coarse-to-fine after 10·3/(c − 23) budget iterations, each 1 + 0.1/0.2 fit iterations
    assert out["iteration_cost"] == pytest.approx(1.5)
    assert out["speedup"] == pytest.approx(30 / (10 * 3 / (c2f_at_10 - 23) * 1.5 + 10))
    assert out["faster"] is faster
    md = (tmp_path / "conv.md").read_text()
    assert "| 16 | learned | 1.50 |" in md and ("| yes |" in md) is faster


def test_fit_config_of_a_coarse_to_fine_budget():
    cfg = fc.fit_config("learned+c2f", 400, 100)
    assert (cfg.init, cfg.iters, cfg.coarse_iters, cfg.num_gaussians) == ("learned", 100, 100, 400)
    assert fc.fit_config("structured", 400, 100).coarse_iters == 0


def test_the_previous_default_is_the_baseline_of_the_targets(tmp_path):
    # structured-prev (the structured init with the old optimiser) runs beside the others; the targets and the
    # preset are measured against it, and the speed-ups against plain structured are reported as well
    cfg = fc.fit_config(fc.PREV, 400, 100)
    assert (cfg.init, cfg.lr_final, cfg.betas) == ("structured", 0.05, (0.9, 0.999))
    assert fc.fit_config("structured", 400, 100).betas != cfg.betas
    run = _run(27.0)
    run["inits"] = ["structured", "learned", fc.PREV]
    run["fits"].pop("learned+c2f/16")
    run["fits"][f"{fc.PREV}/16"] = _entry({0: 20.0, 10: 22.0, 30: 24.0}, {0: 0.0, 10: 1.0, 30: 3.0})
    fc.report(run, "conv", out_dir=tmp_path)
    out = json.loads((tmp_path / "conv.json").read_text())
    targets = out["targets"]["16"]
    # budgets 10 and 30: the "≤ 100 iterations" target reads K = 30 against the baseline's K = 30
    assert targets[f"learned@30 ≥ {fc.PREV}@30"] is True  # 27 ≥ 24 (structured@30 is 26)
    assert targets["learned@30 ≥ structured@30 − 0.1 dB"] is True
    assert targets["learned@0 ≥ structured@0 + 3 dB"] is True
    # to structured-prev@30 (24 dB): learned@0 is 23, learned@10 26.5, so 10·(1/3.5) iterations + 10 for the init
    assert out["preset"]["baseline"] == fc.PREV
    assert out["preset"]["inits"]["learned"]["speedup_iteration_equivalent"] == pytest.approx(
        30 / (10 / 3.5 + 10)
    )
    md = (tmp_path / "conv.md").read_text()
    assert f"Time to {fc.PREV}'s 30-iteration PSNR" in md and "Time to structured's 30-iteration PSNR" in md


def test_tables_rebuilt_from_json_name_the_measured_run(tmp_path):
    # --from-json: the header keeps the machine, date and commit of the run that measured, not the rebuild's
    fc.report(_run(27.0), "conv", out_dir=tmp_path)
    saved = json.loads((tmp_path / "conv.json").read_text())
    measured = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).isoformat()
    saved["machine"].update(date=measured, git="abc1234", cpu="Measuring CPU")
    (tmp_path / "conv.json").write_text(json.dumps(saved))
    fc.report(fc.load_run(tmp_path / "conv.json"), "again", out_dir=tmp_path)
    header = (tmp_path / "again.md").read_text().splitlines()[2]
    assert header.startswith(f"Measured {measured} on Measuring CPU") and "commit abc1234" in header
    assert json.loads((tmp_path / "again.json").read_text())["machine"]["git"] == "abc1234"


def test_sealed_run_reports_every_picture_at_equal_settings(tmp_path):
    # a miniature of the headline run: warm-ups chosen on the tuning set first, then every sealed picture
    # fitted by each init under the same optimiser; the report has per-picture rows, mean and median, and
    # labels measured and derived speed-ups apart
    from eval import splits
    from eval.bench import fit_sealed

    warm = fit_sealed.choose_warmups(n=16, k=3, size=32)
    assert set(warm["chosen"]) == set(fit_sealed.INITS) and warm["tuning_pictures"] == [
        p.name for p in splits.TUNING
    ]
    run = fit_sealed.run([16], [3, 6], warm, size=32)
    assert run["pictures"] == [p.name for p in splits.SEALED]
    assert all(len(v) == len(splits.SEALED) for e in run["fits"].values() for v in e["psnr"].values())
    md = fit_sealed.report(run, "sealed_check", out_dir=tmp_path).read_text()
    assert "mean (median), same optimiser" in md and "Speed, measured" in md and "Speed, derived" in md
    assert "chosen on the tuning set" in md and "used for no choice" in md
    for p in splits.SEALED:
        assert f"| 16 | {p.name} | {p.kind} |" in md
    assert (tmp_path / "sealed_check.png").exists() and (tmp_path / "sealed_check.json").exists()


def test_sealed_run_files_that_are_not_one_are_named(tmp_path):
    bad = tmp_path / "other.json"
    bad.write_text('{"benchmark": "fit_speed"}')
    for args in (["--from-json", str(bad)], ["--warmups", str(tmp_path / "missing.json")]):
        with pytest.raises(SystemExit, match="not the JSON of a sealed fit_convergence run"):
            fc.main(args)
