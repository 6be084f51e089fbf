"""Init checkpoint, LLaVA-flag training (in process), the sampler and projector lr, and DeepSpeed runs of
scripts/pretrain.sh + scripts/finetune.sh (2 CPU processes, gloo) under ZeRO-2 and ZeRO-3."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _state(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_init_checkpoint_holds_the_lm_and_the_encoder_exactly(tiny_parts, tiny_init):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import llava_gs  # noqa: F401  (registers the Auto classes)

    init = tiny_init
    lm, enc, full = (
        _state(tiny_parts / "lm/model.safetensors"),
        _state(tiny_parts / "encoder/model.safetensors"),
        _state(init / "model.safetensors"),
    )
    assert not [k for k in full if k.startswith("model.layers.")]  # saved under GS-LLaVA names
    for k, v in lm.items():
        new = "lm_head.weight" if k == "lm_head.weight" else k.replace("model.", "model.language_model.", 1)
        if "embed_tokens" in k or k == "lm_head.weight":  # padded to a multiple of 64 rows
            assert full[new].shape[0] % 64 == 0 and torch.equal(full[new][: v.shape[0]], v)
        else:
            assert torch.equal(full[new], v), k
    for k, v in enc.items():
        assert torch.equal(full["model.vision_tower.encoder." + k], v), k
    model = AutoModelForImageTextToText.from_pretrained(init)
    proc = AutoProcessor.from_pretrained(init)
    assert (
        model.config.image_token_id == proc.image_token_id == proc.tokenizer.convert_tokens_to_ids("<image>")
    )
    assert model.generation_config.suppress_tokens == [model.config.image_token_id]


def test_init_checkpoint_errors_are_clear(tiny_parts, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import build_init_checkpoint
    finally:
        sys.path.pop(0)
    rc = build_init_checkpoint.main(
        ["--lm", str(tiny_parts / "lm"), "--encoder", str(tmp_path), "--output", str(tmp_path / "o")]
    )
    assert rc == 2 and "not a GS encoder folder" in capsys.readouterr().err


def test_modality_grouped_batches_are_single_modality():
    from llava_gs.trainer import modality_grouped_indices

    lengths = [5, -3, 7, 9, -2, -8, 4, 6, -1, 2, 3, -4, 11]
    g = torch.Generator().manual_seed(0)
    order = modality_grouped_indices(lengths, batch_size=2, world_size=2, generator=g)
    assert sorted(order) == list(range(len(lengths)))
    full = len(order) - len(order) % 4
    n_full = sum(1 for s in (1, -1) for _ in range(sum((n > 0) == (s > 0) for n in lengths) // 4))
    for b in range(n_full):
        signs = {lengths[i] > 0 for i in order[4 * b : 4 * b + 4]}
        assert len(signs) == 1
    assert full >= 4 * n_full


def test_projector_learning_rate_group(tiny_parts, tiny_init):
    from transformers import AutoModelForImageTextToText

    from llava_gs.train import LlavaGSTrainingArguments
    from llava_gs.trainer import LlavaGSTrainer

    model = AutoModelForImageTextToText.from_pretrained(tiny_init)
    model.model.vision_tower.requires_grad_(False)
    args = LlavaGSTrainingArguments(
        output_dir=str(tiny_parts / "opt"),
        learning_rate=2e-4,
        mm_projector_lr=2e-5,
        warmup_ratio=0.03,
        use_cpu=True,
        report_to=[],
    )
    assert args.warmup_steps == 0.03
    opt = LlavaGSTrainer(model=model, args=args).create_optimizer()
    proj = {id(p) for p in model.model.multi_modal_projector.parameters()}
    for group in opt.param_groups:
        in_proj = {id(p) in proj for p in group["params"]}
        assert len(in_proj) == 1
        assert group["lr"] == (2e-5 if in_proj.pop() else 2e-4)
    trained = sum(len(g["params"]) for g in opt.param_groups)
    assert trained == sum(1 for p in model.parameters() if p.requires_grad)


def _env():
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"
    )
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return env


def _run(cmd, env, log: Path):
    res = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    log.write_text(res.stdout + res.stderr)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return res.stdout + res.stderr


@pytest.mark.slow
def test_train_in_process_lora_and_reload(tiny_parts, tmp_path, tiny_init):
    """python -m llava_gs.train (no launcher) with LoRA; the adapter folder reloads merged."""
    from llava_gs.builder import load_pretrained_model

    init = tiny_init
    out = tmp_path / "lora"
    cmd = [
        sys.executable,
        "-m",
        "llava_gs.train",
        "--model_name_or_path",
        str(init),
        "--version",
        "v1",
        "--data_path",
        str(tiny_parts / "data/finetune.json"),
        "--image_folder",
        str(tiny_parts / "images"),
        "--splat_folder",
        str(tiny_parts / "splats"),
        "--output_dir",
        str(out),
        "--use_cpu",
        "True",
        "--per_device_train_batch_size",
        "4",
        "--max_steps",
        "2",
        "--learning_rate",
        "1e-3",
        "--lora_enable",
        "True",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
        "--mm_projector_lr",
        "1e-3",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--gradient_checkpointing",
        "True",
    ]
    _run(cmd, _env(), tmp_path / "log.txt")
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    model, proc = load_pretrained_model(out)
    assert type(model).__name__ == "LlavaGSForConditionalGeneration"
    base, _ = load_pretrained_model(init)
    diff = [n for n, p in model.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert any("multi_modal_projector" in n for n in diff) and any("q_proj" in n for n in diff)
    assert not any("vision_tower" in n for n in diff)


@pytest.mark.slow
def test_bad_flags_exit_with_a_message(tiny_parts, tmp_path):
    base = [
        sys.executable,
        "-m",
        "llava_gs.train",
        "--data_path",
        str(tiny_parts / "data/finetune.json"),
        "--output_dir",
        str(tmp_path),
        "--use_cpu",
        "True",
    ]
    res = subprocess.run(
        base + ["--model_name_or_path", str(tiny_parts / "lm")],
        env=_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode != 0 and "--vision_tower must name a GS encoder" in res.stderr
    res = subprocess.run(
        base + ["--model_name_or_path", str(tiny_parts / "lm"), "--version", "llama_2"],
        env=_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode != 0 and "--version 'llama_2'" in res.stderr


@pytest.mark.parametrize("extra", [{"MODEL": "no/such/folder"}, {"VISION_TOWER": "checkpoints/gs-encoder"}])
def test_finetune_without_projector_needs_a_llava_folder(tiny_init, tmp_path, extra):
    """PROJECTOR= (empty) trains on from MODEL's own projector, so MODEL must be a GS-LLaVA folder."""
    env = _env() | {"MODEL": str(tiny_init), "PROJECTOR": "", "OUTPUT_DIR": str(tmp_path / "out")} | extra
    res = subprocess.run(["bash", "scripts/finetune.sh"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and "Set PROJECTOR to the stage-1 mm_projector.safetensors" in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_deepspeed_pretrain_then_finetune(tiny_parts, tmp_path, zero, tiny_init):
    """Both LLaVA stages through the real scripts with `deepspeed --num_gpus 2` on CPU (gloo)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    init = tiny_init
    port = {"zero2": 29611, "zero3": 29631}[zero]
    common = {
        "MODEL": str(init),
        "IMAGE_FOLDER": str(tiny_parts / "images"),
        "SPLAT_FOLDER": str(tiny_parts / "splats"),
        "NUM_GPUS": "2",
        "PER_DEVICE_BATCH": "2",
        "GLOBAL_BATCH": "4",
        "MAX_STEPS": "3",
        "WORKERS": "0",
        "DS_CONFIG": f"scripts/{zero}.json",
    }
    env = _env() | common
    pre = tmp_path / "pretrain"
    pre_env = {
        "DATA_PATH": str(tiny_parts / "data/pretrain.json"),
        "OUTPUT_DIR": str(pre),
        "MASTER_PORT": str(port),
    }
    if zero == "zero3":  # LLaVA's way: a Llama checkpoint + --vision_tower, assembled under zero.Init
        pre_env |= {"MODEL": str(tiny_parts / "lm"), "VISION_TOWER": str(tiny_parts / "encoder")}
    log = _run(
        ["bash", "scripts/pretrain.sh"],
        env | pre_env,
        tmp_path / "pre.log",
    )
    stage = zero[-1]
    if zero == "zero3":  # the encoder's weights really reached the partitioned tower
        logged = float(re.search(r"GS encoder loaded from .*: Σ\|w\| = (\S+)", log).group(1))
        expect = sum(
            float(v.double().abs().sum()) for v in _state(tiny_parts / "encoder/model.safetensors").values()
        )
        assert logged == pytest.approx(expect, rel=1e-5)
    assert f"ZeRO stage {stage}" in log and "world size 2" in log
    assert (pre / "mm_projector.safetensors").is_file() and not list(pre.glob("checkpoint-*"))
    ft = tmp_path / "finetune"
    log = _run(
        ["bash", "scripts/finetune.sh"],
        env
        | {
            "DATA_PATH": str(tiny_parts / "data/finetune.json"),
            "OUTPUT_DIR": str(ft),
            "PROJECTOR": str(pre / "mm_projector.safetensors"),
            "MASTER_PORT": str(port + 1),
            "LR": "1e-3",
        },
        tmp_path / "ft.log",
    )
    assert f"ZeRO stage {stage}" in log
    final = AutoModelForImageTextToText.from_pretrained(ft)
    start = AutoModelForImageTextToText.from_pretrained(init)
    # finetuning started from the pretrained projector: the fingerprint logged right after loading it
    # (gathered under ZeRO-3) is that file's, and not the init folder's projector
    pre_proj = load_file(str(pre / "mm_projector.safetensors"))
    logged = float(re.search(r"projector loaded from .*: Σ\|w\| = (\S+)", log).group(1))
    assert logged == pytest.approx(sum(float(v.double().abs().sum()) for v in pre_proj.values()), rel=1e-6)
    init_sum = sum(
        float(v.double().abs().sum()) for v in start.model.multi_modal_projector.state_dict().values()
    )
    assert logged != pytest.approx(init_sum, rel=1e-6)
    fs, ss = final.state_dict(), start.state_dict()
    assert all(torch.equal(fs[k], ss[k]) for k in fs if "vision_tower" in k)  # tower frozen
    assert any(not torch.equal(fs[k], ss[k]) for k in fs if "language_model.layers" in k)  # LLM trained
    if zero == "zero2":  # PROJECTOR= (empty): train on from a finetuned folder, its own projector included
        again = tmp_path / "again"
        log = _run(
            ["bash", "scripts/finetune.sh"],
            env
            | {
                "MODEL": str(ft),
                "DATA_PATH": str(tiny_parts / "data/finetune.json"),
                "OUTPUT_DIR": str(again),
                "PROJECTOR": "",
                "MASTER_PORT": str(port + 2),
                "LR": "0",  # nothing moves: the result is the starting point
                "MAX_STEPS": "1",
            },
            tmp_path / "again.log",
        )
        assert f"training on from the projector inside {ft}" in log and "projector loaded from" not in log
        ag = AutoModelForImageTextToText.from_pretrained(again).state_dict()
        assert all(torch.equal(ag[k], fs[k]) for k in fs)
    if zero == "zero3":  # LoRA instruction tuning through its script, ZeRO-3 like LLaVA's
        lora = tmp_path / "lora"
        _run(
            ["bash", "scripts/finetune_lora.sh"],
            env
            | {
                "DATA_PATH": str(tiny_parts / "data/finetune.json"),
                "OUTPUT_DIR": str(lora),
                "PROJECTOR": str(pre / "mm_projector.safetensors"),
                "MASTER_PORT": str(port + 2),
                "LORA_R": "4",
                "LORA_ALPHA": "8",
            },
            tmp_path / "lora.log",
        )
        cfg = json.loads((lora / "adapter_config.json").read_text())
        assert cfg["r"] == 4 and "multi_modal_projector" in cfg["modules_to_save"]
        merged = tmp_path / "merged"
        _run(
            [
                sys.executable,
                "scripts/merge_lora.py",
                "--adapter",
                str(lora),
                "--output",
                str(merged),
                "--dtype",
                "float32",
            ],
            _env(),
            tmp_path / "merge.log",
        )
        assert isinstance(AutoModelForImageTextToText.from_pretrained(merged), type(final))
