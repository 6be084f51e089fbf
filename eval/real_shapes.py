"""Real shapes without the weights: the parts of a real GS-LLaVA run, randomly initialised, on CPU.

    python -m eval.real_shapes prepare OUT [--lm-layers 2] [--context 512]
    python -m eval.real_shapes report OUT [-o eval/results/real_shapes]

`prepare` writes what scripts/real_shapes_check.sh trains on: OUT/lm (a Llama with Vicuna-7B's config,
hidden 4096, 32 heads, MLP 11008, vocab 32000, but `--lm-layers` layers, and Mistral-7B v1's
SentencePiece tokenizer, which ships inside mistral-common: Llama's format and size, 32000 tokens, but
another vocabulary than Vicuna's), OUT/encoder (a GS encoder
on open_clip's ViT-B-16 config, 196 tokens), OUT/data (LLaVA-format pretrain and finetune JSON over 8
scikit-image photos; one finetune conversation is longer than `--context`) and OUT/shapes.json (forward
shapes of the GS encoder at 196 and 98 tokens and of its RGB twin, and the parts' parameter counts).

`report` reads the run's logs and trainer states and writes the resource report: parameters per part,
tokens per sample, peak RSS per rank and seconds per step at these shapes, and, computed from the real
configs, the memory per GPU of Vicuna-7B + ViT-B/16 under ZeRO-2 and ZeRO-3 on 8 GPUs with LLaVA-1.5's
batch sizes, beside LLaVA-1.5's published requirement.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

GIB = 2**30
# Vicuna-7B v1.5 (lmsys/vicuna-7b-v1.5 config.json): a Llama-2-7B
VICUNA_7B = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "tie_word_embeddings": False,
}
# LLaVA-1.5's recipe (scripts/v1_5/pretrain.sh, finetune.sh): 8 GPUs, per-device batch, ZeRO stage
LLAVA15 = {
    "gpus": 8,
    "pretrain": {"micro_batch": 32, "zero": 2, "trains": "projector"},
    "finetune": {"micro_batch": 16, "zero": 3, "trains": "LLM + projector"},
    "context": 2048,
    # LLaVA's README (haotian-liu/LLaVA, Train), quoted: "Pretrain takes around 5.5 hours for LLaVA-v1.5-13B on
    # 8x A100 (80G), due to the increased resolution to 336px. It takes around 3.5 hours for LLaVA-v1.5-7B."
    # "Visual instruction tuning takes around 20 hours for LLaVA-v1.5-13B on 8x A100 (80G), due to the
    # increased resolution to 336px. It takes around 10 hours for LLaVA-v1.5-7B on 8x A100 (40G)."
    "published": (
        'LLaVA\'s README: pretraining "around 5.5 hours for LLaVA-v1.5-13B on 8x A100 (80G)" and "around 3.5 hours '
        'for LLaVA-v1.5-7B"; visual instruction tuning "around 20 hours for LLaVA-v1.5-13B on 8x A100 (80G)" and '
        '"around 10 hours for LLaVA-v1.5-7B on 8x A100 (40G)"'
    ),
}
PHOTOS = [
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "camera",
    "cat",
    "immunohistochemistry",
    "hubble_deep_field",
]
CAPTIONS = [
    "An astronaut in a white suit in front of a flag.",
    "A ginger cat looking at the camera.",
    "A cup of coffee on a saucer.",
    "A rocket on a launch pad.",
    "A man with a camera on a tripod.",
    "A cat sitting on a sofa.",
    "A stained tissue sample under a microscope.",
    "Galaxies in deep space.",
]


def llama_tokenizer(out: Path):
    """Mistral-7B v1's 32000-token SentencePiece tokenizer (Llama's format, another vocabulary), which
    mistral-common ships, as a transformers
    tokenizer saved in `out` (Vicuna's specials: <unk> 0, <s> 1, </s> 2; pad = unk, as LLaVA sets it)."""
    try:
        import mistral_common
    except ImportError as e:
        raise SystemExit(
            "needs mistral-common (pip install 'mistral-common'; the project's dev extra)"
        ) from e
    from transformers import LlamaTokenizer

    model = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
    if not model.is_file():
        raise SystemExit(f"{model}: missing from mistral-common; reinstall it (pip install 'mistral-common')")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, out / "tokenizer.model")
    tok = LlamaTokenizer.from_pretrained(str(out), add_bos_token=True, legacy=False)
    if len(tok) != VICUNA_7B["vocab_size"]:
        raise SystemExit(f"{model}: {len(tok)} tokens, expected {VICUNA_7B['vocab_size']}")
    tok.pad_token = tok.unk_token
    tok.save_pretrained(str(out))
    return tok


def write_data(out: Path, context: int, tokenizer) -> dict:
    """8 JPEG photos and LLaVA JSON (pretrain: plain captions; finetune: dialogues, one past `context`)."""
    from PIL import Image

    from eval.bench.common import sample_photo

    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    pretrain, finetune = [], []
    for i, (name, caption) in enumerate(zip(PHOTOS, CAPTIONS, strict=True)):
        Image.fromarray(sample_photo(name)).convert("RGB").save(images / f"{name}.jpg", quality=90)
        pretrain.append(
            {
                "id": f"pre-{name}",
                "image": f"{name}.jpg",
                "conversations": [{"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": caption}],
            }
        )
        turns = [
            {"from": "human", "value": "<image>\nWhat is in the picture?"},
            {"from": "gpt", "value": caption},
            {"from": "human", "value": "Describe it in more detail."},
            {"from": "gpt", "value": f"{caption} The photograph is sharp and well lit."},
        ]
        if i == 0:  # longer than the context: truncated with a warning naming it
            words = (caption + " ") * ((context // max(1, len(tokenizer(caption)["input_ids"]))) + 20)
            turns += [{"from": "human", "value": "Tell me everything."}, {"from": "gpt", "value": words}]
        if i < 4:  # 2 steps of 2 see every finetune sample, the long one included
            finetune.append({"id": f"ft-{name}", "image": f"{name}.jpg", "conversations": turns})
    (out / "pretrain.json").write_text(json.dumps(pretrain, indent=1))
    (out / "finetune.json").write_text(json.dumps(finetune, indent=1))
    return {"long_sample": finetune[0]["id"], "samples": len(finetune)}


def encoder_shapes(encoder) -> dict:
    """Forward shapes of the GS encoder (196 tokens), a 98-token one and the RGB twin, on 2 inputs."""
    import torch

    from gs_encoder.modeling_gs_vision import GSVisionConfig, GSVisionModel, RGBVisionModel

    g = torch.Generator().manual_seed(0)
    splats = torch.rand(2, 3136, 8, generator=g)
    splats[..., 2:5] = splats[..., 2:5] * 0.02 + 0.005
    mask = torch.ones(2, 3136, dtype=torch.bool)
    mask[1, 1600:] = False  # padding: two images of different N
    out = {}
    with torch.no_grad():
        for label, model in (
            ("gs_196", encoder),
            ("gs_98", GSVisionModel(GSVisionConfig.from_open_clip("ViT-B-16", num_tokens=98))),
        ):
            o = model.eval()(splats, mask)
            out[label] = {
                "hidden_states": list(o.hidden_states[-2].shape),
                "image_embeds": list(o.image_embeds.shape),
            }
        rgb = RGBVisionModel(GSVisionConfig.from_open_clip("ViT-B-16", input="rgb")).eval()
        o = rgb(torch.rand(2, 3, 224, 224, generator=g))
        out["rgb"] = {
            "hidden_states": list(o.hidden_states[-2].shape),
            "image_embeds": list(o.image_embeds.shape),
        }
    return out


def prepare(out: Path, lm_layers: int, context: int) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from gs_encoder.modeling_gs_vision import GSVisionConfig, GSVisionModel

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = llama_tokenizer(out / "lm")
    torch.manual_seed(0)
    cfg = LlamaConfig(**{**VICUNA_7B, "num_hidden_layers": lm_layers, "torch_dtype": "float16"})
    with torch.device("cpu"):
        lm = LlamaForCausalLM(cfg).half()  # Vicuna ships float16
    lm.save_pretrained(str(out / "lm"))
    n_lm = sum(p.numel() for p in lm.parameters())
    del lm
    encoder = GSVisionModel(GSVisionConfig.from_open_clip("ViT-B-16", num_tokens=196))
    encoder.init_from_visual()
    encoder.save_pretrained(out / "encoder")
    shapes = encoder_shapes(encoder)
    data = write_data(out / "data", context, tokenizer)
    record = {
        "lm_layers": lm_layers,
        "context": context,
        "lm_parameters": n_lm,
        "encoder_parameters": sum(p.numel() for p in encoder.parameters()),
        "shapes": shapes,
        **data,
    }
    (out / "shapes.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


# ---- the memory of the real run, computed from the real configs ------------------------------------


def real_parameter_counts() -> dict:
    """Exact parameter counts of Vicuna-7B (vocab padded to 32064 after `<image>`, as build_from_parts
    does), the GS encoder on ViT-B/16 and the mlp2x_gelu projector, built on the meta device."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from gs_encoder.modeling_gs_vision import GSVisionConfig, GSVisionModel

    vocab = -(-(VICUNA_7B["vocab_size"] + 1) // 64) * 64
    with torch.device("meta"):
        lm = LlamaForCausalLM(LlamaConfig(**{**VICUNA_7B, "vocab_size": vocab}))
        enc = GSVisionModel(GSVisionConfig.from_open_clip("ViT-B-16", num_tokens=196))
    d, h = enc.config.width, VICUNA_7B["hidden_size"]
    return {
        "llm": sum(p.numel() for p in lm.parameters()),
        "llm_embeddings_and_head": 2 * vocab * h,
        "vision": sum(p.numel() for p in enc.parameters()),
        "projector": d * h + h + h * h + h,
        "vocab_padded": vocab,
    }


def activation_bytes(tokens: int, checkpointing: bool, vocab: int) -> int:
    """Activation memory of one Llama-7B forward kept for backward, bf16 with SDPA attention (no s² term),
    for `tokens` tokens on one GPU. Per layer and token (bytes): attention block 14h (RMSNorm input in fp32
    4h, its output 2h, q/k/v 6h, attention output 2h), MLP block 6h + 8i (RMSNorm 6h, gate, up, SiLU,
    product 2i each); with checkpointing only each layer's input (2h) is kept, plus one layer recomputed.
    Both add the logits: bf16 (2V) and the float32 copy and log-softmax the loss keeps (8V) per token."""
    h, i, layers = VICUNA_7B["hidden_size"], VICUNA_7B["intermediate_size"], VICUNA_7B["num_hidden_layers"]
    per_layer = 20 * h + 8 * i
    body = tokens * (layers * 2 * h + per_layer) if checkpointing else tokens * layers * per_layer
    return body + tokens * 10 * vocab


def memory_table(counts: dict, seq: dict[str, int]) -> list[dict]:
    """GiB per GPU for each stage × ZeRO stage × checkpointing with LLaVA-1.5's micro-batches on 8 GPUs;
    `seq`: tokens per sample of each stage (pretraining's captions are short, finetuning fills the context)."""
    n = LLAVA15["gpus"]
    total = counts["llm"] + counts["vision"] + counts["projector"]
    rows = []
    for stage in ("pretrain", "finetune"):
        trainable = counts["projector"] + (counts["llm"] if stage == "finetune" else 0)
        tokens = LLAVA15[stage]["micro_batch"] * seq[stage]
        for zero in (2, 3):
            weights = 2 * total / (n if zero == 3 else 1)  # bf16
            grads = 2 * trainable / n  # bf16, partitioned from stage 2 on
            optim = 12 * trainable / n  # fp32 master, Adam m and v
            for ckpt in (True, False):
                act = activation_bytes(tokens, ckpt, counts["vocab_padded"])
                rows.append(
                    {
                        "stage": stage,
                        "zero": zero,
                        "checkpointing": ckpt,
                        "micro_batch": LLAVA15[stage]["micro_batch"],
                        "tokens_per_sample": seq[stage],
                        "tokens_per_gpu": tokens,
                        "weights_gib": weights / GIB,
                        "grads_gib": grads / GIB,
                        "optimizer_gib": optim / GIB,
                        "activations_gib": act / GIB,
                        "total_gib": (weights + grads + optim + act) / GIB,
                        "recipe": ckpt and zero == LLAVA15[stage]["zero"],
                    }
                )
    return rows


# ---- what the CPU run measured ------------------------------------------------------------------------


def _resources(out: Path) -> list[dict]:
    path = out / "logs" / "resources.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _steps(folder: Path) -> dict:
    state = json.loads((folder / "trainer_state.json").read_text())
    runtime = next((h["train_runtime"] for h in state["log_history"] if "train_runtime" in h), None)
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    steps = state["global_step"]
    return {
        "steps": steps,
        "seconds_per_step": runtime / steps if runtime and steps else None,
        "losses": losses,
    }


def _tokens(out: Path) -> dict:
    """Tokens per sample of the finetune data with the real tokenizer and 196 image tokens."""
    from transformers import AutoTokenizer

    from llava_gs.conversation import tokenize_conversation

    tok = AutoTokenizer.from_pretrained(str(out / "init"))
    rows = {}
    for name in ("pretrain", "finetune"):
        template = "plain" if name == "pretrain" else "vicuna_v1"
        records = json.loads((out / "data" / f"{name}.json").read_text())
        lengths = [len(tokenize_conversation(r["conversations"], tok, template, 1, 196)[0]) for r in records]
        rows[name] = {"min": min(lengths), "max": max(lengths), "mean": sum(lengths) / len(lengths)}
    return rows


def collect(out: Path) -> dict:
    """The record of a finished run in `out`: what the CPU run measured, the real parameter counts and the
    projected memory of the real run."""
    from gs_encoder.report import machine_info

    shapes = json.loads((out / "shapes.json").read_text())
    timings = (
        json.loads((out / "logs" / "timings.json").read_text())
        if (out / "logs" / "timings.json").exists()
        else {}
    )
    counts = real_parameter_counts()
    measured = {
        stage: _steps(out / stage)
        for stage in ("pretrain", "finetune")
        if (out / stage / "trainer_state.json").exists()
    }
    tokens = _tokens(out)
    seq = {"pretrain": round(tokens["pretrain"]["mean"]), "finetune": LLAVA15["context"]}
    return {
        "machine": machine_info(),
        "cpu_run": {
            "shapes": shapes,
            "tokens": tokens,
            "training": measured,
            "resources": _resources(out),
            "stage_seconds": timings,
        },
        "real_parameters": counts,
        "memory_per_gpu": memory_table(counts, seq),
        "llava15": LLAVA15,
    }


def cpu_run_prediction(record: dict) -> list[dict]:
    """The memory model of memory_table applied to the CPU run itself (its layers, 2 ZeRO-3 ranks, micro-batch
    1, its longest sample within the context): GiB per rank of the training state it counts."""
    shapes, counts, tok = record["cpu_run"]["shapes"], record["real_parameters"], record["cpu_run"]["tokens"]
    ranks, total = 2, shapes["lm_parameters"] + shapes["encoder_parameters"] + counts["projector"]
    rows = []
    for stage in ("pretrain", "finetune"):
        trainable = counts["projector"] + (shapes["lm_parameters"] if stage == "finetune" else 0)
        tokens = min(tok[stage]["max"], shapes["context"])
        h, i = VICUNA_7B["hidden_size"], VICUNA_7B["intermediate_size"]
        act = tokens * (shapes["lm_layers"] * 2 * h + 20 * h + 8 * i) + tokens * 10 * counts["vocab_padded"]
        state = 2 * total / ranks + 2 * trainable / ranks + 12 * trainable / ranks
        rows.append({"stage": stage, "state_gib": state / GIB, "activations_gib": act / GIB,
                     "total_gib": (state + act) / GIB, "tokens": tokens})  # fmt: skip
    return rows


def transient_bound_bytes(row: dict, vocab: int) -> float:
    """An upper bound of what the backward holds on top of the memory table's state and activations: the
    gradient of the logits (fp32 from the loss, 4V per token, and its bf16 copy, 2V), under ZeRO-3 the
    gathered parameters (stage3_max_live_parameters = 1e9 in scripts/zero3.json: 2 GB in bf16), and one
    fp32 gradient bucket of hidden² elements (DeepSpeed's "auto" reduce_bucket_size). Allocator
    fragmentation is not bounded here."""
    h = VICUNA_7B["hidden_size"]
    logits_grad = row["tokens_per_gpu"] * 6 * vocab
    gathered = 2 * 1e9 if row["zero"] == 3 else 0
    return logits_grad + gathered + 4 * h * h


def write_report(record: dict, dest: Path) -> int:
    """eval/results/real_shapes.{json,md} from a run's record (collect, or the JSON of an earlier run)."""
    predicted = cpu_run_prediction(record)
    record = {**record, "llava15": LLAVA15, "cpu_run_predicted": predicted}
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    md = _parts_section(record) + _cpu_run_section(record, predicted) + _projection_section(record)
    dest.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


def _parts_section(record: dict) -> list[str]:
    """The header (what was measured, what is projected) and the parameters of each part."""
    from gs_encoder.report import markdown_table

    info, counts, shapes = record["machine"], record["real_parameters"], record["cpu_run"]["shapes"]
    return [
        "# Real shapes without the weights",
        "",
        "Regenerate: `bash scripts/real_shapes_check.sh` (the run and this report); `python -m eval.real_shapes "
        "rebuild eval/results/real_shapes.json` rewrites the report from the run's record.",
        "",
        f"Measured: the CPU run of `bash scripts/real_shapes_check.sh`, {info['date']}, {info.get('cpu', '')} "
        f"({info['cpu_count']} cores, commit {info['git']}). "
        f"Random weights in the real architectures: a GS encoder on open_clip's ViT-B-16 (196 tokens), a Llama with "
        f"Vicuna-7B's config but {shapes['lm_layers']} layers, Mistral-7B v1's 32000-token SentencePiece tokenizer "
        "(shipped in mistral-common: Llama's format and size, another vocabulary than Vicuna's); ZeRO-3 "
        f"on 2 CPU ranks, bf16, gradient checkpointing, SDPA, context {shapes['context']}. Projected: the memory "
        "of the real run, computed from the configs; no GPU has measured it.",
        "",
        "## Parts",
        "",
        markdown_table(
            ["part", "parameters (this run)", "parameters (real run)"],
            [
                [
                    "GS encoder (ViT-B/16, 196 tokens)",
                    f"{shapes['encoder_parameters'] / 1e6:.1f} M",
                    f"{counts['vision'] / 1e6:.1f} M",
                ],
                ["projector mlp2x_gelu 768→4096", "", f"{counts['projector'] / 1e6:.1f} M"],
                [
                    f"Llama ({shapes['lm_layers']} / 32 layers)",
                    f"{shapes['lm_parameters'] / 1e6:.1f} M",
                    f"{counts['llm'] / 1e6:.1f} M",
                ],
                ["of which embeddings + LM head", "", f"{counts['llm_embeddings_and_head'] / 1e6:.1f} M"],
            ],
        ),
        "",
        "Encoder forward shapes (2 images, 3136 and 1600 Gaussians): "
        + "; ".join(
            f"{k}: hidden {v['hidden_states']}, embed {v['image_embeds']}"
            for k, v in shapes["shapes"].items()
        )
        + ".",
        "",
    ]


def _cpu_run_section(record: dict, predicted: list[dict]) -> list[str]:
    """What the CPU run measured (steps, losses, peak RSS, tokens, stage times) and the memory model's
    prediction for that run beside its measured peak."""
    from gs_encoder.report import markdown_table

    shapes, tokens = record["cpu_run"]["shapes"], record["cpu_run"]["tokens"]
    measured, resources = record["cpu_run"]["training"], record["cpu_run"]["resources"]
    timings = record["cpu_run"]["stage_seconds"]
    md = [
        "## The CPU run",
        "",
        markdown_table(
            ["stage", "steps", "s / step", "losses"],
            [
                [
                    s,
                    m["steps"],
                    f"{m['seconds_per_step']:.1f}" if m["seconds_per_step"] else "–",
                    ", ".join(f"{x:g}" for x in m["losses"]),
                ]
                for s, m in measured.items()
            ],
        ),
        "",
        markdown_table(
            ["stage", "rank", "peak RSS (GiB)"],
            [[r["stage"], r["rank"], f"{r['peak_rss_mib'] / 1024:.2f}"] for r in resources],
        ),
        "",
        "Tokens per sample (196 image tokens + text, real tokenizer): "
        + "; ".join(f"{k} {v['min']}–{v['max']} (mean {v['mean']:.0f})" for k, v in tokens.items())
        + f". Sample `{shapes['long_sample']}` is longer than the context and was truncated with a warning.",
        "",
    ]
    if timings:
        md += ["Stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + ".", ""]
    peak = {stage: max((r["peak_rss_mib"] / 1024 for r in resources if r["stage"] == stage), default=None)
            for stage in ("pretrain", "finetune")}  # fmt: skip
    return md + [
        "### The memory model against this run",
        "",
        "The model of the projection below, applied to this run's own configuration (its parameters, 2 ZeRO-3 ranks, "
        "micro-batch 1, its longest sample within the context), predicts the training state it counts; the "
        "measured peak RSS of a rank is far larger. RSS counts every byte the process maps, and the model leaves "
        "out the Python interpreter and the code of torch, DeepSpeed and transformers, the full bf16 model each "
        "rank loads before ZeRO-3 partitions it, DeepSpeed's flat and communication buffers and the allocator's "
        "cache; this run measured only the total, so the gap is reported, not broken down.",
        "",
        markdown_table(
            [
                "stage",
                "predicted: state + activations (GiB per rank)",
                "measured: peak RSS (GiB, highest rank)",
                "gap (GiB)",
            ],
            [
                [
                    r["stage"],
                    f"{r['state_gib']:.2f} + {r['activations_gib']:.2f} = {r['total_gib']:.2f}",
                    "–" if peak[r["stage"]] is None else f"{peak[r['stage']]:.2f}",
                    "–" if peak[r["stage"]] is None else f"{peak[r['stage']] - r['total_gib']:.2f}",
                ]
                for r in predicted
            ],
        ),  # fmt: skip
        "",
    ]


def _projection_section(record: dict) -> list[str]:
    """The projected memory per GPU of the real run, with the transients bounded and LLaVA-1.5's published
    times beside."""
    from gs_encoder.report import markdown_table

    counts, mem, tokens = record["real_parameters"], record["memory_per_gpu"], record["cpu_run"]["tokens"]
    seq = {"pretrain": round(tokens["pretrain"]["mean"]), "finetune": LLAVA15["context"]}
    return [
        f"## Projected memory per GPU of the real run (Vicuna-7B + ViT-B/16, {LLAVA15['gpus']} GPUs, context "
        f"{LLAVA15['context']}): a projection, not a measurement",
        "",
        "Computed from the real configs, never run on a GPU (bf16 weights and gradients, fp32 Adam master + "
        "moments, partitioned over the GPUs as each ZeRO stage does; activations of SDPA attention for "
        "micro-batch × tokens per sample, logits included: pretraining at this run's mean of "
        f"{seq['pretrain']} tokens (196 image tokens + a caption), finetuning at the full {seq['finetune']}-token "
        "context). The backward's transients are bounded in their own column (transient_bound_bytes: the "
        "logits' gradient, ZeRO-3's gathered parameters at stage3_max_live_parameters, one gradient bucket); "
        "allocator fragmentation and the frozen tower's forward are not counted, and the section above shows "
        "how far a process's footprint can exceed the counted state. The recipe's rows are marked ✓. "
        f"LLaVA-1.5's published times and hardware: {LLAVA15['published']}.",
        "",
        markdown_table(
            [
                "stage",
                "ZeRO",
                "ckpt",
                "micro-batch × tokens",
                "weights",
                "grads",
                "Adam",
                "activations",
                "total GiB",
                "transients ≤",
                "total + transients ≤",
                "recipe",
            ],
            [
                [
                    r["stage"],
                    r["zero"],
                    "yes" if r["checkpointing"] else "no",
                    f"{r['micro_batch']} × {r['tokens_per_sample']}",
                    f"{r['weights_gib']:.1f}",
                    f"{r['grads_gib']:.1f}",
                    f"{r['optimizer_gib']:.1f}",
                    f"{r['activations_gib']:.1f}",
                    f"{r['total_gib']:.1f}",
                    f"{transient_bound_bytes(r, counts['vocab_padded']) / GIB:.1f}",
                    f"{r['total_gib'] + transient_bound_bytes(r, counts['vocab_padded']) / GIB:.1f}",
                    "✓" if r["recipe"] else "",
                ]
                for r in mem
            ],
        ),
        "",
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval.real_shapes", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="write the random real-shape parts and data")
    p.add_argument("out", type=Path)
    p.add_argument("--lm-layers", type=int, default=2)
    p.add_argument("--context", type=int, default=512)
    r = sub.add_parser("report", help="write the resource report from a finished run")
    r.add_argument("out", type=Path)
    r.add_argument("-o", "--output", type=Path, default=Path("eval/results/real_shapes"))
    b = sub.add_parser("rebuild", help="rewrite the report from a run's record (its JSON); no run")
    b.add_argument("record", type=Path)
    b.add_argument("-o", "--output", type=Path, default=Path("eval/results/real_shapes"))
    args = ap.parse_args(argv)
    if args.cmd == "rebuild":
        try:
            record = json.loads(args.record.read_text())
        except (OSError, ValueError) as e:
            ap.error(f"{args.record}: not a readable run record ({e})")
        return write_report(record, args.output)
    if args.cmd == "prepare":
        if args.lm_layers < 1 or args.context < 256:
            ap.error("--lm-layers must be ≥ 1 and --context ≥ 256 (196 image tokens plus text)")
        return prepare(args.out, args.lm_layers, args.context)
    missing = [f for f in ("shapes.json", "init/config.json") if not (args.out / f).is_file()]
    if missing:
        ap.error(
            f"{args.out}: no {missing[0]}; run `bash scripts/real_shapes_check.sh` (OUT={args.out}) first"
        )
    return write_report(collect(args.out), args.output)


if __name__ == "__main__":
    sys.exit(main())
