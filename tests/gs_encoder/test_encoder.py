"""The GS vision encoder: masking, permutation invariance, shapes, fp32 stem, save/load, RGB twin."""

import pytest
import torch

from gs_encoder.modeling_gs_vision import (
    GSVisionConfig,
    GSVisionModel,
    RGBVisionModel,
    _resample_positions,
    resize_token_grid,
)
from gs_encoder.stem import GSStem

TINY = {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8}  # 4×4 grid


def tiny(num_tokens=16, **kw):
    torch.manual_seed(0)
    kw = {"resampler_heads": 2, "gs_width": 32, **kw}
    return GSVisionModel(GSVisionConfig(vision_cfg=TINY, embed_dim=32, num_tokens=num_tokens, **kw)).eval()


def splats(n, seed):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n, 8, generator=g)
    s[:, 2:5] = 0.02 + 0.05 * s[:, 2:5]
    s[:, 3] -= 0.04
    return s


@pytest.mark.parametrize("k", [16, 8])
def test_shapes(k):
    m = tiny(k)
    out = m(torch.stack([splats(10, 0), splats(10, 1)]))
    assert len(out.hidden_states) == 3  # embeddings + 2 blocks
    assert all(h.shape == (2, 1 + k, 64) for h in out.hidden_states)
    assert out.image_embeds.shape == (2, 32)


def test_padding_does_not_change_outputs():
    m = tiny()
    a, b = splats(7, 0), splats(12, 1)
    batch = torch.zeros(2, 12, 8)
    batch[0, :7], batch[1] = a, b
    batch[0, 7:] = 123.0  # garbage in padded rows
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, :7], mask[1] = True, True
    with torch.no_grad():
        out = m(batch, mask)
        alone = m(a[None])
    torch.testing.assert_close(out.image_embeds[0], alone.image_embeds[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.hidden_states[-2][0], alone.hidden_states[-2][0], atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # and the mask matters: without it the garbage changes the result
        unmasked = m(batch, torch.ones_like(mask))
    assert not torch.allclose(unmasked.image_embeds[0], alone.image_embeds[0], atol=1e-3)


def test_permutation_invariance_and_one_gaussian():
    m = tiny()
    s = splats(20, 3)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(
            m(s[None]).image_embeds, m(s[perm][None]).image_embeds, atol=1e-5, rtol=1e-5
        )
        one = m(s[:1][None])
    assert torch.isfinite(one.image_embeds).all()
    with pytest.raises(ValueError, match="at least one"):
        m(s[None], torch.zeros(1, 20, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[B, Nmax, 8\]"):
        m(s)


def test_stem_runs_in_float32_under_autocast():
    stem = GSStem(16, fourier_bands=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = stem(splats(5, 0)[None])
    assert out.dtype == torch.float32


def test_stem_uses_colour():
    stem = GSStem(16, fourier_bands=4)
    a = splats(3, 0)
    b = a.clone()
    b[:, 5:8] = 1 - b[:, 5:8]
    assert (stem(a[None]) - stem(b[None])).abs().mean() > 0.05


def test_save_load_round_trip(tmp_path):
    m = tiny(8)
    m.save_pretrained(tmp_path / "enc")
    back = GSVisionModel.from_pretrained(tmp_path / "enc").eval()
    s = splats(9, 4)[None]
    with torch.no_grad():
        torch.testing.assert_close(back(s).image_embeds, m(s).image_embeds, atol=0, rtol=0)
    assert back.config.num_tokens == 8


def test_rgb_twin_same_interface(tmp_path):
    torch.manual_seed(0)
    rgb = RGBVisionModel(GSVisionConfig(vision_cfg=TINY, embed_dim=32, input="rgb")).eval()
    out = rgb(torch.rand(2, 3, 32, 32))
    assert out.image_embeds.shape == (2, 32) and out.hidden_states[-1].shape == (2, 17, 64)
    rgb.save_pretrained(tmp_path / "rgb")
    assert isinstance(GSVisionModel.from_pretrained(tmp_path / "rgb"), RGBVisionModel)


def test_token_grids_resize_as_the_position_embeddings_do():
    tokens = torch.randn(2, 64, 5)  # two images, an 8×8 grid of 5-dim tokens
    assert torch.equal(resize_token_grid(tokens, 64), tokens)  # the full budget: the grid itself
    half = resize_token_grid(tokens, 32)  # the half budget: 4×8, each token the mean of two rows
    grid = tokens.reshape(2, 8, 8, 5)
    assert torch.allclose(half, ((grid[:, 0::2] + grid[:, 1::2]) / 2).reshape(2, 32, 5), atol=1e-6)
    # token i of a resized grid sits where GS position embedding i was placed, for every budget rule
    pos = torch.randn(1 + 196, 7)
    for k in (196, 98, 64, 50):
        assert torch.allclose(resize_token_grid(pos[None, 1:], k)[0], _resample_positions(pos, k)[1:])
    with pytest.raises(ValueError, match="square patch grid"):
        resize_token_grid(torch.randn(1, 50, 4), 8)


def test_teacher_patch_tokens_are_the_rgb_towers_hidden_state():
    from gs_encoder.teacher import ClipTeacher, clip_normalise

    torch.manual_seed(0)
    rgb = RGBVisionModel(GSVisionConfig(vision_cfg=TINY, embed_dim=32, input="rgb")).eval()
    teacher = ClipTeacher(rgb)  # anything with an open_clip `.visual`
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        out = rgb(clip_normalise(images, 32))
    for layer in (-2, -1, 1):
        emb, tokens = teacher.embed_with_tokens(images, layer)
        assert torch.allclose(tokens, out.hidden_states[layer][:, 1:], atol=1e-5)
        assert torch.allclose(emb, teacher(images), atol=1e-6)
    for bad in (0, 3, -3):  # the embeddings (0) and beyond the two blocks
        with pytest.raises(ValueError, match=f"layer {bad}: "):
            teacher.block_index(bad)


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown GSVisionConfig keys"):
        GSVisionConfig.from_dict({"widht": 3})
    with pytest.raises(ValueError, match="input"):
        GSVisionConfig(input="depth")
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        GSVisionModel.from_pretrained(tmp_path)


def test_vit_b16_config_builds_from_open_clip_name():
    cfg = GSVisionConfig.from_open_clip("ViT-B-16", num_tokens=98)
    assert cfg.width == 768 and cfg.embed_dim == 512 and cfg.vision_cfg["layers"] == 12


@pytest.mark.parametrize("stage", [1, 2])
def test_frozen_parameters_stay_and_trainable_ones_move(stage):
    m = tiny().train()
    m.set_stage(stage, vit_blocks=1)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    m(torch.stack([splats(6, 0), splats(6, 1)])).image_embeds.pow(2).sum().backward()
    opt.step()
    changed = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("stem.") for n in changed) and any(n.startswith("resampler.") for n in changed)
    assert {"resampler.layers.0.0.to_kv_media.weight", "class_embedding", "positional_embedding"} <= changed
    assert ("visual.proj" in changed) == (stage == 2)
    assert any(n.startswith("visual.transformer.resblocks.0.") for n in changed) == (stage == 2)
    assert not any(n.startswith("visual.transformer.resblocks.1.") for n in changed)
    assert not any(n.startswith(("visual.conv1", "visual.ln_post")) for n in changed)


def test_encoder_params_command(capsys, tmp_path):
    from gs_encoder.cli import main
    from gs_encoder.modeling_gs_vision import stage_shares

    assert main(["encoder-params"]) == 0
    out = capsys.readouterr().out
    assert "9.74%" in out and "14.13%" in out  # ViT-B/16: 2 blocks + proj of 149.62 M; + 2 text blocks + proj
    shares = stage_shares()
    head, clip = shares["counts"]["gs_head"], shares["counts"]["clip"]
    stages = shares["counts"]["stages"]
    stage2 = stages["stage 2: + first 2 ViT blocks + proj"]
    # the share of the whole encoder: the GS head and the unfrozen CLIP parts over CLIP plus the head
    assert stage2["share_whole"] == pytest.approx(100 * stage2["trainable"] / (clip + head))
    assert stage2["trainable"] - head == pytest.approx(0.0974 * clip, rel=1e-3)
    assert f"{stage2['share_whole']:.2f}%" in out and "9.7%" in out
    # the default head is sized so that both whole-encoder shares are the paper's within 1.5 points
    for row in ("stage 2: + first 2 ViT blocks + proj", "stage 2 + symmetric text layers"):
        assert abs(stages[row]["share_whole"] - stages[row]["paper"]) <= 1.5, row
    gs = GSVisionModel(GSVisionConfig.from_open_clip("ViT-B-16"))
    assert head == sum(p.numel() for p in gs.parameters()) - sum(p.numel() for p in gs.visual.parameters())
    # the full-width head (Perceiver at 768, feed-forward ×4) was twice the paper's stage-2 share
    full = stage_shares(gs_width=768, gs_ff_mult=4, resampler_heads=8)["counts"]["stages"]
    assert full["stage 2: + first 2 ViT blocks + proj"]["share_whole"] > 2 * 8.2
    assert main(["encoder-params", "--gs-width", "192", "--resampler-heads", "3"]) == 0
    assert "head width 192" in capsys.readouterr().out


def test_narrow_head_keeps_latents_at_the_vit_width_and_full_width_head_loads_from_older_configs(tmp_path):
    import json

    narrow = tiny()
    attn = narrow.resampler.layers[0][0]
    assert narrow.config.gs_width == 32 and narrow.stem.pos.out_features == 32
    assert narrow.resampler.latents.shape == (narrow.config.num_tokens, 64)  # the ViT's width
    assert (attn.to_kv_media.in_features, attn.to_q.in_features, attn.to_out.out_features) == (32, 64, 64)
    # a config.json written before the head had its own width describes the full-width head
    full = tiny(gs_width=64, gs_ff_mult=4, resampler_heads=8)
    assert full.resampler.layers[0][0].to_kv_media is None  # one key/value map, open_flamingo's layer
    full.save_pretrained(tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    for key in ("gs_width", "gs_ff_mult", "resampler_heads"):
        del cfg[key]
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    old = GSVisionModel.from_pretrained(tmp_path / "old")
    assert (old.config.gs_width, old.config.gs_ff_mult, old.config.resampler_heads) == (64, 4, 8)
    x = torch.stack([splats(6, 0), splats(6, 1)])
    with torch.no_grad():
        assert torch.equal(old.eval()(x).image_embeds, full.eval()(x).image_embeds)
    with pytest.raises(ValueError, match="gs_width"):
        GSVisionConfig(vision_cfg=TINY, gs_width=30, resampler_heads=4)


def test_outputs_are_visible_to_zero3_hooks():
    # DeepSpeed ZeRO-3 fetches and releases a module's parameters through hooks that walk its outputs;
    # an output type they cannot walk hides its tensors (seen at real shapes: "A module has unknown inputs
    # or outputs type (VisionOutput)")
    from deepspeed.runtime.zero.utils import apply_to_tensors_only

    from gs_encoder.modeling_gs_vision import VisionOutput

    out = VisionOutput((torch.zeros(1, 2), torch.ones(1, 2)), torch.full((1, 3), 2.0))
    seen = []
    walked = apply_to_tensors_only(lambda t: seen.append(t) or t + 1, out)
    assert len(seen) == 3 and isinstance(walked, VisionOutput)
    assert (
        torch.equal(walked.hidden_states[1], torch.full((1, 2), 2.0))
        and walked.last_hidden_state is walked.hidden_states[-1]
    )
