#!/usr/bin/env bash
# LLaVA-1.5's LoRA instruction tuning (r 128, α 256, lr 2e-4, projector lr 2e-5, ZeRO-3) with the GS tower.
# MODEL must be a GS-LLaVA folder (scripts/build_init_checkpoint.py): it is the adapter's base. The output
# is a PEFT adapter folder (projector included); llava_gs.builder.load_pretrained_model merges it, and
# scripts/merge_lora.py writes a plain GS-LLaVA folder. Other variables as in finetune.sh.
export LORA=True
export LR="${LR:-2e-4}"
exec bash "$(dirname "${BASH_SOURCE[0]}")/finetune.sh" "$@"
