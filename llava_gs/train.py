"""GS-LLaVA training with LLaVA-1.5's command line, on the HF Trainer + DeepSpeed.

    deepspeed llava_gs/train.py --deepspeed scripts/zero2.json \\
        --model_name_or_path lmsys/vicuna-7b-v1.5 --vision_tower checkpoints/gs-encoder \\
        --version plain --data_path blip_laion_cc_sbu_558k.json --image_folder images \\
        --splat_folder splats --tune_mm_mlp_adapter True --mm_projector_type mlp2x_gelu ...

`--model_name_or_path` is either a GS-LLaVA folder (from `scripts/build_init_checkpoint.py` or an
earlier stage) or a Llama checkpoint, in which case `--vision_tower` names the GS encoder folder and the
model is assembled here (the LLM loads under ZeRO-3's `zero.Init`). Stage 1 (`--tune_mm_mlp_adapter`)
trains the projector only and writes `mm_projector.safetensors`; stage 2 loads it with
`--pretrain_mm_mlp_adapter` and trains projector + LLM (full or LoRA). Final weights are safetensors in a
`save_pretrained` folder (ZeRO-3 gathers them) that `AutoModelForImageTextToText` loads.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import sys
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

logger = logging.getLogger("llava_gs.train")

VERSIONS = {"plain": "plain", "v1": "vicuna_v1", "vicuna_v1": "vicuna_v1"}
ASPECT = {"pad": "pad", "square": "resize", "resize": "resize", "crop": "crop"}
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "GS-LLaVA folder, or a Llama/Vicuna checkpoint"})
    version: str = field(default="v1", metadata={"help": "conversation template: plain | v1 (vicuna_v1)"})
    vision_tower: str | None = field(default=None, metadata={"help": "GS encoder folder (with a Llama LM)"})
    pretrain_mm_mlp_adapter: str | None = field(default=None, metadata={"help": "mm_projector.safetensors"})
    mm_projector_type: str = field(default="mlp2x_gelu")
    mm_vision_select_layer: int = field(default=-2)
    tune_mm_mlp_adapter: bool = field(default=False, metadata={"help": "train the projector only (stage 1)"})
    freeze_backbone: bool = field(default=False, metadata={"help": "freeze the language model"})
    mm_use_im_start_end: bool = field(default=False, metadata={"help": "unsupported (LLaVA-1.5 uses False)"})
    mm_use_im_patch_token: bool = field(
        default=False, metadata={"help": "LLaVA's flag; False only (as LLaVA-1.5)"}
    )
    num_visual_tokens: int | None = field(default=None, metadata={"help": "check: K tokens per image"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa | eager | flash_attention_2"})


@dataclass
class DataArguments:
    data_path: str = field(metadata={"help": "LLaVA-1.5 JSON"})
    image_folder: str | None = field(default=None)
    splat_folder: str | None = field(default=None, metadata={"help": "splat cache from gsv fit-shards"})
    image_aspect_ratio: str = field(default="pad", metadata={"help": "pad | square | crop"})
    lazy_preprocess: bool = field(
        default=True, metadata={"help": "LLaVA's flag; samples are always tokenised lazily (same result)"}
    )
    is_multimodal: bool = field(default=True, metadata={"help": "LLaVA's flag; True only"})
    num_gaussians: int | None = field(
        default=None,
        metadata={
            "help": "N for images fitted on the fly (default: that of the --splat_folder sidecars, else the "
            "model's processor, else 3136)"
        },
    )
    fit_iters: int | None = field(
        default=None,
        metadata={"help": "fitting iterations on the fly (default: the model's processor, or 3000)"},
    )
    fit_missing: bool = field(default=False, metadata={"help": "fit images missing from the splat cache"})


@dataclass
class LlavaGSTrainingArguments(TrainingArguments):
    """transformers' TrainingArguments + LLaVA-1.5's training flags."""

    optim: str = field(default="adamw_torch")
    remove_unused_columns: bool = field(default=False)
    model_max_length: int = field(default=2048, metadata={"help": "longest sample in tokens"})
    freeze_mm_mlp_adapter: bool = field(default=False)
    mm_projector_lr: float | None = field(default=None)
    group_by_modality_length: bool = field(default=False)
    lora_enable: bool = field(default=False)
    lora_r: int = field(default=64)
    lora_alpha: int = field(default=16)
    lora_dropout: float = field(default=0.05)
    lora_bias: str = field(default="none")
    bits: int = field(default=16, metadata={"help": "16 only (QLoRA is not supported yet)"})
    warmup_ratio: float | None = field(
        default=None, metadata={"help": "LLaVA's flag: warm-up as a fraction of all steps (→ warmup_steps)"}
    )

    def __post_init__(self):
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
            self.warmup_steps = self.warmup_ratio  # transformers 5: a float in [0, 1) is a ratio
        super().__post_init__()


def _init_cpu_deepspeed(argv: list[str]) -> None:
    """DeepSpeed on CPU: initialise gloo before TrainingArguments, or zero.Init sees world size 1."""
    if "--deepspeed" in " ".join(argv) and not torch.cuda.is_available() and "RANK" in os.environ:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")


def _is_llava_gs(path: str) -> bool:
    cfg = pathlib.Path(path) / "config.json"
    return cfg.is_file() and json.loads(cfg.read_text()).get("model_type") == "llava_gs"


def _rank0() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def build_model(margs: ModelArguments, targs):
    """(model, tokenizer) for training, following the module docstring."""
    from transformers import AutoTokenizer

    from .builder import build_from_parts, load_projector
    from .modeling_llava_gs import LlavaGSForConditionalGeneration

    dtype = torch.bfloat16 if targs.bf16 else torch.float16 if targs.fp16 else torch.float32
    if _is_llava_gs(margs.model_name_or_path):
        if margs.vision_tower:
            logger.info("--vision_tower ignored: %s already holds its tower", margs.model_name_or_path)
        model = LlavaGSForConditionalGeneration.from_pretrained(
            margs.model_name_or_path, dtype=dtype, attn_implementation=margs.attn_implementation
        )
        tokenizer = AutoTokenizer.from_pretrained(margs.model_name_or_path)
        k = model.config.image_seq_length
        if margs.num_visual_tokens is not None and margs.num_visual_tokens != k:
            raise ValueError(f"--num_visual_tokens {margs.num_visual_tokens} but the model uses {k}")
        if margs.mm_projector_type != model.config.projector_type:
            logger.info(
                "--mm_projector_type ignored: the checkpoint's projector is %s", model.config.projector_type
            )
    else:
        if not margs.vision_tower:
            raise ValueError(
                f"{margs.model_name_or_path} is not a GS-LLaVA folder, so --vision_tower must name a GS encoder "
                "folder (or build one with scripts/build_init_checkpoint.py)"
            )
        model, tokenizer = build_from_parts(
            margs.model_name_or_path,
            margs.vision_tower,
            projector_type=margs.mm_projector_type,
            vision_feature_layer=margs.mm_vision_select_layer,
            dtype=dtype,
            num_visual_tokens=margs.num_visual_tokens,
            attn_implementation=margs.attn_implementation,
        )
        logger.info(
            "GS encoder loaded from %s: Σ|w| = %.6e", margs.vision_tower, _abs_sum(model.model.vision_tower)
        )
    if margs.pretrain_mm_mlp_adapter:
        load_projector(model, margs.pretrain_mm_mlp_adapter)
        logger.info(
            "projector loaded from %s: Σ|w| = %.6e",
            margs.pretrain_mm_mlp_adapter,
            _abs_sum(model.model.multi_modal_projector),
        )
    tokenizer.model_max_length = targs.model_max_length
    tokenizer.padding_side = "right"
    return model, tokenizer


def _abs_sum(module) -> float:
    """Σ|w| over a module's parameters (gathered under ZeRO-3): a fingerprint that its weights loaded."""
    from .builder import gathered

    params = list(module.parameters())
    with gathered(params, modifier_rank=None):
        return float(sum(p.detach().double().abs().sum() for p in params))


def set_trainable(model, margs: ModelArguments, targs) -> None:
    """LLaVA-1.5's freezing: the tower always frozen; stage 1 trains the projector only."""
    model.model.vision_tower.requires_grad_(False)
    if margs.freeze_backbone:
        model.model.language_model.requires_grad_(False)
        model.lm_head.requires_grad_(False)
    if margs.tune_mm_mlp_adapter:
        model.requires_grad_(False)
        model.model.multi_modal_projector.requires_grad_(True)
    if targs.freeze_mm_mlp_adapter:
        model.model.multi_modal_projector.requires_grad_(False)


def apply_lora(model, targs):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=targs.lora_r,
        lora_alpha=targs.lora_alpha,
        lora_dropout=targs.lora_dropout,
        bias=targs.lora_bias,
        target_modules=LORA_TARGETS,
        modules_to_save=["multi_modal_projector"],
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _last_checkpoint(output_dir: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None


def _check_flags(margs: ModelArguments, dargs: DataArguments, targs) -> None:
    """SystemExit naming the flag for settings LLaVA-1.5's recipe does not have or we do not support."""
    if margs.version not in VERSIONS:
        raise SystemExit(f"--version {margs.version!r}: valid are {', '.join(VERSIONS)}")
    if dargs.image_aspect_ratio not in ASPECT:
        raise SystemExit(f"--image_aspect_ratio {dargs.image_aspect_ratio!r}: valid are {', '.join(ASPECT)}")
    for flag, value, supported in (
        ("mm_use_im_start_end", margs.mm_use_im_start_end, False),
        ("mm_use_im_patch_token", margs.mm_use_im_patch_token, False),
        ("is_multimodal", dargs.is_multimodal, True),
    ):
        if value != supported:  # LLaVA would change what the model sees: refused, not ignored
            raise SystemExit(f"--{flag} {value} is not supported (LLaVA-1.5 trains with {supported})")
    if targs.bits != 16:
        raise SystemExit("--bits 4/8 (QLoRA) is not supported; use --bits 16 (full or LoRA finetuning)")
    if targs.lora_enable and not _is_llava_gs(margs.model_name_or_path):
        raise SystemExit(
            "--lora_enable needs --model_name_or_path to be a GS-LLaVA folder (the adapter's base); build one "
            "with scripts/build_init_checkpoint.py"
        )


def train(argv: list[str] | None = None) -> None:
    from transformers import HfArgumentParser

    from .data import LlavaGSDataset, collate_llava
    from .modeling_llava_gs import count_parameters
    from .trainer import LlavaGSTrainer, NoFinalCheckpoint

    argv = sys.argv[1:] if argv is None else argv
    _init_cpu_deepspeed(argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, LlavaGSTrainingArguments))
    # TrainingArguments(deepspeed=...) must exist before the model is built (zero.Init), and stay alive
    margs, dargs, targs = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO if _rank0() else logging.WARNING, format="%(name)s: %(message)s")
    _check_flags(margs, dargs, targs)

    model, tokenizer = build_model(margs, targs)
    processor = _processor(margs, dargs, model.config, tokenizer)
    image_proc = processor.image_processor
    model.config.use_cache = False
    set_trainable(model, margs, targs)
    if targs.gradient_checkpointing or getattr(targs, "activation_checkpointing", False):
        model.enable_input_require_grads()  # the frozen LLM's inputs must carry grad for checkpointing
    if targs.lora_enable:
        model = apply_lora(model, targs)
    config = model.config
    vision = config.vision_config
    dataset = LlavaGSDataset(
        dargs.data_path,
        tokenizer,
        VERSIONS[margs.version],
        num_image_tokens=config.image_seq_length,
        splat_folder=dargs.splat_folder,
        image_folder=dargs.image_folder,
        fit_missing=dargs.fit_missing,
        fit=image_proc.fit_config(),
        canvas=image_proc.canvas,
        resize=image_proc.resize,
        max_length=targs.model_max_length,
        tower_input=vision.input,
    )
    trainable = count_parameters(model, trainable_only=True)  # full sizes, also when ZeRO-3 partitions
    logger.info("%d samples; %d trainable parameters", len(dataset), trainable)
    trainer = LlavaGSTrainer(
        model=model,
        args=targs,
        train_dataset=dataset,
        data_collator=lambda s: collate_llava(s, tokenizer.pad_token_id, vision.image_size),
        processing_class=tokenizer,
        callbacks=[NoFinalCheckpoint()],
    )
    trainer.train(resume_from_checkpoint=_last_checkpoint(targs.output_dir))
    out = _save(trainer, model, margs, targs, tokenizer, processor)
    _log_resources(out)
    _close_distributed()


def _close_distributed() -> None:
    """Every rank waits for the others, then the process group is torn down before the interpreter exits:
    a rank leaving while gloo's threads still talk to it aborts the others ("terminate called ...")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _save(trainer, model, margs: ModelArguments, targs, tokenizer, processor) -> pathlib.Path:
    """Write what the stage trained into --output_dir: the projector alone (stage 1) or the whole model
    (stage 2), with the tokenizer and processor; returns the folder."""
    from .builder import PROJECTOR_FILE, save_projector

    engine = getattr(trainer, "deepspeed", None)
    if engine is not None and _rank0():
        logger.info(
            "trained with DeepSpeed ZeRO stage %d (%s), world size %d",
            engine.zero_optimization_stage(),
            type(engine.optimizer).__name__,
            targs.world_size,
        )
    trainer.save_state()
    model.config.use_cache = True
    out = pathlib.Path(targs.output_dir)
    if margs.tune_mm_mlp_adapter:
        save_projector(model, out / PROJECTOR_FILE)
        if _rank0():
            logger.info("projector saved to %s", out / PROJECTOR_FILE)
    else:
        trainer.save_model(str(out))
    if _rank0():
        tokenizer.save_pretrained(out)
        processor.save_pretrained(out)
    return out


def _log_resources(out: pathlib.Path) -> None:
    """With LLAVA_GS_RESOURCE_LOG=FILE, each rank appends its peak resident memory (one JSON line):
    scripts/real_shapes_check.sh reports it per rank."""
    path = os.environ.get("LLAVA_GS_RESOURCE_LOG")
    if not path:
        return
    import resource

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    line = {"stage": out.name, "rank": int(os.environ.get("RANK", 0)), "peak_rss_mib": peak_kib / 1024}
    with open(path, "a") as f:  # one short write per rank: appends do not interleave
        f.write(json.dumps(line) + "\n")


def _processor(margs: ModelArguments, dargs: DataArguments, config, tokenizer):
    """The model folder's processor when it has one, else a new one; --num_gaussians etc. override it."""
    from transformers import AutoProcessor

    from .processing_llava_gs import processor_for

    if (pathlib.Path(margs.model_name_or_path) / "processor_config.json").is_file():
        processor = AutoProcessor.from_pretrained(margs.model_name_or_path)
    else:
        processor = processor_for(config, tokenizer)
    processor.tokenizer = tokenizer
    processor.image_processor.update(
        resize=ASPECT[dargs.image_aspect_ratio], num_gaussians=dargs.num_gaussians, iters=dargs.fit_iters
    )
    if dargs.splat_folder and processor.image_processor.tower_input == "gs":
        _fit_like_splat_folder(processor.image_processor, dargs)
    return processor


def _fit_like_splat_folder(image_proc, dargs: DataArguments) -> None:
    """Make the processor fit (--fit_missing here; chat and lmms-eval with the saved model) as the splats of
    --splat_folder were fitted, read from their sidecars: the init, the optimiser and, unless --num_gaussians
    says otherwise, N. Says what it changed, and warns about what differs and stays."""
    from gs_encoder.fitting.fit import fitted_with, record_fields

    seen, read = fitted_with(dargs.splat_folder)
    if not read:
        return
    adopt = record_fields(seen)
    if "init" in seen:
        adopt["init"] = seen["init"]
    if "num_gaussians_initial" in seen and dargs.num_gaussians is None:
        adopt["num_gaussians"] = seen["num_gaussians_initial"]
    cfg = image_proc.fit_config()
    now = {k: getattr(cfg, k) for k in adopt}
    changed = {k: v for k, v in adopt.items() if now[k] != v}
    if changed:
        image_proc.update(**changed)
        logger.info(
            "processor: fits images on the fly as the splats of %s were fitted (%d sidecars read): %s",
            dargs.splat_folder,
            read,
            ", ".join(f"{k} {now[k]} -> {v}" for k, v in changed.items()),
        )
    _fit_from_their_init_weights(image_proc, seen, dargs.splat_folder)
    for key, attr, fix in (
        ("num_gaussians_initial", "num_gaussians", "--num_gaussians"),
        ("canvas", "canvas", "the vision tower's image size"),
        ("resize", "resize", "--image_aspect_ratio"),
    ):
        if key in seen and getattr(image_proc, attr) != seen[key]:
            logger.warning(
                "%s: its splats were fitted with %s = %s, the processor fits with %s (set by %s): images "
                "fitted on the fly will differ from the training splats",
                dargs.splat_folder,
                attr,
                seen[key],
                getattr(image_proc, attr),
                fix,
            )


def _fit_from_their_init_weights(image_proc, seen: dict, folder: str) -> None:
    """With the learned init: fit from the weights the folder's splats came from (their sidecars' file when it
    still has their identity), else warn that on-the-fly fits start from other weights."""
    from gs_encoder.fitting.learned_init import weights_id

    want, now = seen.get("init_weights_id"), image_proc.init_weights_id()
    if not want or not now or want == now:
        return
    path = seen.get("init_weights")
    if path and pathlib.Path(path).is_file() and weights_id(path) == want:
        image_proc.update(init_weights=path)
        logger.info(
            "processor: fits from the learned-init weights of %s's splats, %s (%s)", folder, path, want
        )
        return
    logger.warning(
        "%s: its splats were fitted from learned-init weights %s (%s), the processor fits from %s (%s): photos "
        "fitted on the fly will differ from the training splats; set fit.init_weights in the saved "
        "processor_config.json to a file with id %s",
        folder,
        path or "the shipped file of their day",
        want,
        image_proc.fit["init_weights"] or "the shipped file",
        now,
        want,
    )


def main() -> None:
    train()


if __name__ == "__main__":
    main()
