"""GS-LLaVA model: forward/backward, splice checks, generation, save/load, LoRA merge, processor."""

import pytest
import torch

from llava_gs import LlavaGSForConditionalGeneration
from llava_gs.conversation import IGNORE_INDEX

from ..tiny import K, tiny_llava_config

IMG = 3  # <image> id of the tiny tokenizer


def splat_batch(b, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(b, n, 8, generator=g)
    s[..., 2] = s[..., 4] = 0.03 + 0.05 * s[..., 2]
    s[..., 3] = 0.0
    return s, torch.ones(b, n, dtype=torch.bool)


def prompt_ids(b=1, text=(5, 6, 7), after=(8, 9)):
    return torch.tensor([[1, *text] + [IMG] * K + list(after)] * b)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LlavaGSForConditionalGeneration(tiny_llava_config()).eval()


def test_forward_backward_and_masked_loss(model):
    ids = prompt_ids(2)
    gs, mask = splat_batch(2)
    labels = ids.clone()
    labels[:, : 4 + K] = IGNORE_INDEX
    out = model(input_ids=ids, gaussians=gs, gaussians_mask=mask, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, out.logits.shape[-1])
    expect = torch.nn.functional.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(out.loss, expect)
    out.loss.backward()
    proj = next(model.model.multi_modal_projector.parameters())
    stem = model.model.vision_tower.encoder.stem.pos.weight
    assert proj.grad is not None and proj.grad.abs().sum() > 0 and stem.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_image_features_reach_the_text(model):
    ids = prompt_ids()
    a, mask = splat_batch(1, seed=0)
    b, _ = splat_batch(1, seed=1)
    with torch.no_grad():
        la = model(input_ids=ids, gaussians=a, gaussians_mask=mask).logits
        lb = model(input_ids=ids, gaussians=b, gaussians_mask=mask).logits
    assert torch.equal(la[:, :4], lb[:, :4])  # causal: positions before the image do not see it
    assert (la[:, -1] - lb[:, -1]).abs().max() > 1e-4


def test_padding_gaussians_changes_nothing(model):
    ids = prompt_ids()
    gs, mask = splat_batch(1, n=30)
    padded = torch.cat([gs, torch.rand(1, 34, 8)], dim=1)
    pmask = torch.cat([mask, torch.zeros(1, 34, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        a = model(input_ids=ids, gaussians=gs, gaussians_mask=mask).logits
        b = model(input_ids=ids, gaussians=padded, gaussians_mask=pmask).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_token_image_mismatch_is_a_clear_error(model):
    gs, mask = splat_batch(2)
    with pytest.raises(ValueError, match=rf"holds {K} <image> token\(s\) but 2 image\(s\) × {K} tokens"):
        model(input_ids=prompt_ids(), gaussians=gs, gaussians_mask=mask)
    with pytest.raises(ValueError, match="no gaussians were given"):
        model(input_ids=prompt_ids())


def test_dummy_set_keeps_the_tower_in_the_graph(model):
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    gs, mask = splat_batch(1, n=1)
    calls = []
    hook = model.model.vision_tower.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = model(
            input_ids=ids, gaussians=gs, gaussians_mask=mask, image_flags=torch.tensor([False]), labels=ids
        )
        ref = model(input_ids=ids, labels=ids)
    finally:
        hook.remove()
    assert calls == [1]
    torch.testing.assert_close(out.logits, ref.logits)
    out.loss.backward()
    grad = model.model.vision_tower.encoder.stem.pos.weight.grad
    assert grad is not None and torch.count_nonzero(grad) == 0  # in the graph, with a zero gradient
    model.zero_grad(set_to_none=True)


def test_generate_runs_the_tower_once_and_matches_argmax(model):
    ids = prompt_ids()
    gs, mask = splat_batch(1)
    calls = []
    hook = model.model.vision_tower.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = model.generate(
            input_ids=ids, gaussians=gs, gaussians_mask=mask, max_new_tokens=6, do_sample=False
        )
    finally:
        hook.remove()
    new = out.shape[1] - ids.shape[1]  # 6, or fewer when the random model said its end-of-sequence token
    assert calls == [1] and (new == 6 or (0 < new < 6 and out[0, -1] == model.generation_config.eos_token_id))
    seq = ids  # greedy decoding without a cache, by hand
    with torch.no_grad():
        for _ in range(new):
            nxt = model(input_ids=seq, gaussians=gs, gaussians_mask=mask).logits[:, -1].argmax(-1)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
    assert torch.equal(out, seq)


def test_beam_search_and_left_padded_batch(model):
    gs, mask = splat_batch(2)
    ids = prompt_ids()
    beams = model.generate(
        input_ids=ids,
        gaussians=gs[:1],
        gaussians_mask=mask[:1],
        max_new_tokens=4,
        num_beams=3,
        num_return_sequences=2,
        do_sample=False,
    )
    assert beams.shape == (2, ids.shape[1] + 4)
    long = prompt_ids(text=(5, 6, 7, 10, 11))
    short = prompt_ids(text=(5, 6, 7))
    pad = 0
    batch = torch.full((2, long.shape[1]), pad)
    batch[0] = long[0]
    batch[1, 2:] = short[0]
    attn = (torch.arange(long.shape[1]) >= torch.tensor([[0], [2]])).long()
    both = model.generate(
        input_ids=batch,
        attention_mask=attn,
        gaussians=gs,
        gaussians_mask=mask,
        max_new_tokens=4,
        do_sample=False,
        pad_token_id=pad,
    )
    one = model.generate(
        input_ids=short, gaussians=gs[1:], gaussians_mask=mask[1:], max_new_tokens=4, do_sample=False
    )
    assert torch.equal(both[1, -4:], one[0, -4:])


def test_save_load_auto_classes_give_identical_logits(model, tmp_path):
    from transformers import AutoConfig, AutoModelForImageTextToText

    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    cfg = AutoConfig.from_pretrained(tmp_path)
    assert cfg.model_type == "llava_gs" and cfg.image_seq_length == K and cfg.vision_config.num_tokens == K
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    ids, (gs, mask) = prompt_ids(), splat_batch(1)
    with torch.no_grad():
        a = model(input_ids=ids, gaussians=gs, gaussians_mask=mask).logits
        b = loaded(input_ids=ids, gaussians=gs, gaussians_mask=mask).logits
    assert torch.equal(a, b)


def test_lora_merge_equals_the_adapter(model):
    from peft import LoraConfig, get_peft_model

    from llava_gs.train import LORA_TARGETS

    base = LlavaGSForConditionalGeneration(model.config)
    base.load_state_dict(model.state_dict())
    peft_model = get_peft_model(
        base,
        LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, modules_to_save=["multi_modal_projector"]),
    )
    names = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert names and all("language_model" in n for n in names)  # LoRA on the LLM only
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    ids, (gs, mask) = prompt_ids(), splat_batch(1)
    peft_model.eval()
    with torch.no_grad():
        a = peft_model(input_ids=ids, gaussians=gs, gaussians_mask=mask).logits
        merged = peft_model.merge_and_unload()
        b = merged(input_ids=ids, gaussians=gs, gaussians_mask=mask).logits
        c = model(input_ids=ids, gaussians=gs, gaussians_mask=mask).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert (a - c).abs().max() > 1e-3  # the adapter did change the model


def test_rgb_twin_takes_pixels():
    from gs_encoder.modeling_gs_vision import GSVisionConfig
    from llava_gs import GSVisionTowerConfig, LlavaGSConfig

    vision = GSVisionTowerConfig.from_encoder_config(
        GSVisionConfig(
            vision_cfg={"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
            embed_dim=32,
            input="rgb",
        )
    )
    cfg = LlavaGSConfig(vision_config=vision, text_config=tiny_llava_config().text_config, image_token_id=IMG)
    assert cfg.image_seq_length == 16  # (32 / 8)², CLS dropped
    m = LlavaGSForConditionalGeneration(cfg)
    out = m(input_ids=prompt_ids(), pixel_values=torch.randn(1, 3, 32, 32), labels=prompt_ids())
    assert torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="needs `pixel_values`"):
        m(input_ids=prompt_ids(), gaussians=splat_batch(1)[0])


def test_config_validation():
    with pytest.raises(ValueError, match="image_seq_length=5 but the vision tower gives 16"):
        tiny_llava_config(image_seq_length=5)
    with pytest.raises(ValueError, match="unknown projector_type 'mlp'"):
        tiny_llava_config(projector_type="mlp")
    with pytest.raises(ValueError, match="vision_feature_layer=7 is outside"):
        tiny_llava_config(vision_feature_layer=7)
    for kind, n in (("linear", 1), ("mlp2x_gelu", 3), ("mlp3x_gelu", 5)):
        m = LlavaGSForConditionalGeneration(tiny_llava_config(projector_type=kind))
        proj = m.model.multi_modal_projector
        assert (len(proj) if isinstance(proj, torch.nn.Sequential) else 1) == n


def test_processor_round_trip_and_prompt(tiny_tokenizer, tmp_path, photo_path):
    from transformers import AutoProcessor

    from llava_gs import processor_for
    from llava_gs.conversation import tokenize_conversation

    cfg = tiny_llava_config()
    proc = processor_for(cfg, tiny_tokenizer, fit={"num_gaussians": 25, "iters": 5})
    proc.save_pretrained(tmp_path)
    cfg.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is type(proc) and loaded.num_image_tokens == K
    assert loaded.image_processor.num_gaussians == 25 and loaded.image_processor.canvas == 32
    turns = [{"from": "human", "value": "<image>\nWhat is in the image?"}]
    batch = loaded.prompt(turns, images=[photo_path("chelsea.png")])
    ids, _ = tokenize_conversation(turns, tiny_tokenizer, "vicuna_v1", 1, K, add_generation_prompt=True)
    assert batch["input_ids"][0].tolist() == ids
    assert tiny_tokenizer.decode(ids).endswith("What is in the image? ASSISTANT:")
    assert batch["gaussians"].shape == (1, 25, 8) and batch["gaussians_mask"].all()
    text = loaded("USER: <image>\nHi ASSISTANT:", splats=[batch["gaussians"][0]])
    assert int((text["input_ids"] == IMG).sum()) == K
    with pytest.raises(ValueError, match="holds 0 <image> but 1 image"):
        loaded("no image tag", splats=[batch["gaussians"][0]])


def test_processor_records_its_fitting_as_one_fit_dict(tiny_tokenizer, tmp_path):
    # a processor saves every setting of its on-the-fly fitting resolved, in one `fit` dict of FitConfig fields,
    # and fits with what it loads; an edited value is what it then fits with; fitting settings outside the
    # dict (an older format) or unknown ones are errors naming them
    import json

    from transformers import AutoProcessor

    from gs_encoder import FitConfig
    from llava_gs import processor_for
    from llava_gs.processing_llava_gs import PROCESSOR_FIT

    cfg = tiny_llava_config()
    proc = processor_for(cfg, tiny_tokenizer, fit={"num_gaussians": 25, "iters": 5})
    proc.save_pretrained(tmp_path)
    cfg.save_pretrained(tmp_path)
    config_file = tmp_path / "processor_config.json"
    saved = json.loads(config_file.read_text())
    fit = saved["image_processor"]["fit"]
    stale = [k for k in saved["image_processor"] if k.startswith("fit_") and k != "fit_init_weights_id"]
    assert set(fit) == set(PROCESSOR_FIT) and not stale
    default = FitConfig()
    assert fit["betas"] == list(default.betas) and fit["init"] == default.init
    assert fit["lr_warmup"] == default.warmup_iters > 0  # resolved: the default init warms up
    loaded = AutoProcessor.from_pretrained(tmp_path).image_processor.fit_config()
    assert loaded == FitConfig(num_gaussians=25, iters=5, lr_warmup=default.warmup_iters, target_psnr=None)
    fit["betas"], fit["lr_decay"] = [0.8, 0.99], 1.0
    config_file.write_text(json.dumps(saved))
    mine = AutoProcessor.from_pretrained(tmp_path).image_processor.fit_config()
    assert (mine.betas, mine.lr_decay, mine.num_gaussians) == ((0.8, 0.99), 1.0, 25)
    old = json.loads(json.dumps(saved))
    old["image_processor"].pop("fit")
    old["image_processor"].update(num_gaussians=25, fit_iters=5, fit_betas=[0.9, 0.999])
    config_file.write_text(json.dumps(old))
    with pytest.raises(ValueError, match="fit_betas, fit_iters, num_gaussians outside the `fit` dict"):
        AutoProcessor.from_pretrained(tmp_path)
    fit["lr"] = [0.1, 0.1, 0.1]
    config_file.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="unknown fitting setting"):
        AutoProcessor.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="unknown image-processor setting 'fit_iters'"):
        proc.image_processor.update(fit_iters=3)


def test_processor_carries_its_learned_init_weights(tiny_tokenizer, tmp_path, monkeypatch):
    # weights of the processor's own are saved beside its config and found there on loading, from any folder
    import json

    from transformers import AutoProcessor

    from gs_encoder.fitting.learned_init import SplatInitNet, save_learned_init, weights_id
    from llava_gs import processor_for
    from llava_gs.processing_llava_gs import WEIGHTS_FILE

    mine = save_learned_init(tmp_path / "mine" / "w.safetensors", SplatInitNet(8, 8, 1, base="density"))
    cfg = tiny_llava_config()
    proc = processor_for(cfg, tiny_tokenizer, fit={"num_gaussians": 25, "iters": 5})
    proc.image_processor.update(init="learned", init_weights=str(mine))
    proc.save_pretrained(tmp_path / "a")
    cfg.save_pretrained(tmp_path / "a")
    saved = json.loads((tmp_path / "a" / "processor_config.json").read_text())["image_processor"]
    assert saved["fit"]["init_weights"] == WEIGHTS_FILE and saved["fit_init_weights_id"] == weights_id(mine)
    assert (tmp_path / "a" / WEIGHTS_FILE).read_bytes() == mine.read_bytes()
    assert proc.image_processor.fit["init_weights"] == str(mine)  # the live processor is unchanged
    monkeypatch.chdir(tmp_path / "mine")  # the relative name is the folder's, not the working directory's
    loaded = AutoProcessor.from_pretrained(tmp_path / "a").image_processor
    assert loaded.fit_config().init_weights == str(tmp_path / "a" / WEIGHTS_FILE)
    assert loaded.init_weights_id() == weights_id(mine)
    # a folder that lost them: the error names the file in the folder
    (tmp_path / "a" / WEIGHTS_FILE).unlink()
    with pytest.raises(ValueError, match=str(tmp_path / "a" / WEIGHTS_FILE)):
        AutoProcessor.from_pretrained(tmp_path / "a")
    # without weights of its own, nothing is copied and the shipped ones are used
    plain = processor_for(cfg, tiny_tokenizer, fit={"num_gaussians": 25, "iters": 5})
    plain.save_pretrained(tmp_path / "b")
    assert not (tmp_path / "b" / WEIGHTS_FILE).exists()


def test_rate_controlled_photos_make_a_mixed_batch(model, tiny_tokenizer, photo_path):
    """Rate control gives each photo its own N; the padded batch answers as each photo alone does."""
    from llava_gs import processor_for

    cfg = tiny_llava_config()
    fit = {"num_gaussians": 25, "iters": 30, "max_gaussians": 200, "target_psnr": 26.0}
    proc = processor_for(cfg, tiny_tokenizer, fit=fit)
    flat = torch.full((32, 32, 3), 0.4)
    photos = [photo_path("chelsea.png"), flat.numpy()]
    batch = proc.image_processor(photos)
    counts = batch["gaussians_mask"].sum(1).tolist()
    assert counts[0] > counts[1] >= 1  # the photo needs more Gaussians than a flat picture
    ids = prompt_ids(2)
    with torch.no_grad():
        both = model(
            input_ids=ids, gaussians=batch["gaussians"], gaussians_mask=batch["gaussians_mask"]
        ).logits
        for b in range(2):
            alone = proc.image_processor([photos[b]])
            one = model(
                input_ids=ids[:1], gaussians=alone["gaussians"], gaussians_mask=alone["gaussians_mask"]
            )
            torch.testing.assert_close(both[b], one.logits[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="needs max_gaussians"):
        processor_for(cfg, tiny_tokenizer, fit={"num_gaussians": 25, "target_psnr": 30.0})
    with pytest.raises(ValueError, match="max_gaussians must be an int ≥ 1"):
        proc.image_processor.update(max_gaussians=0)
