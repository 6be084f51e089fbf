"""eval.mini.adaptive: the splats it fits are the ones lmms-eval reads, and a world that is not the model's
is refused."""

import pytest

from eval.mini import adaptive

pytestmark = pytest.mark.skipif(
    not (adaptive.SHIPPED / "model" / "model.safetensors").is_file(), reason="no shipped demo model"
)


def test_the_adaptive_cache_is_the_one_the_lmms_eval_model_reads(tmp_path):
    pytest.importorskip("lmms_eval")
    from llava_gs.eval.lmms_plugin import LlavaGSLmms
    from llava_gs.processing_llava_gs import LlavaGSProcessor

    model = adaptive.SHIPPED / "model"
    scene = sorted((adaptive.SHIPPED / "scenes").glob("*.png"))[0]
    proc = LlavaGSProcessor.from_pretrained(model).image_processor
    cap, target = int(proc.fit_config().num_gaussians), 29.5
    proc.update(max_gaussians=cap, target_psnr=target)
    rows = adaptive.splat_sets(proc, [scene], tmp_path)
    assert rows[0]["n"] <= cap and rows[0]["psnr"] > target - adaptive.TOLERANCE_DB
    # the arguments `ask` gives lmms-eval, as strings: the same settings, so the same key, so a cache hit
    lmms = LlavaGSLmms(
        str(model), fit_max_gaussians=str(cap), fit_target_psnr=str(target), splat_cache=str(tmp_path)
    )
    from PIL import Image

    [splats] = lmms.cache.get([Image.open(scene)], progress=False)
    assert lmms.cache.hits == 1 and lmms.cache.misses == 0 and splats.shape == (rows[0]["n"], 8)


def test_a_world_other_than_the_model_s_is_refused(tmp_path):
    data, tasks = tmp_path / "data", tmp_path / "tasks"
    (data / "images" / "test").mkdir(parents=True)
    tasks.mkdir()
    (data / "test_questions.json").write_text("[]")
    (tasks / "_mw_all.yaml").write_text("")
    for shipped in (adaptive.SHIPPED / "scenes").glob("*.png"):
        (data / "images" / "test" / shipped.name).write_bytes(b"another scene")
    with pytest.raises(SystemExit, match="not the shipped scene"):
        adaptive.write_world(data, tasks)
