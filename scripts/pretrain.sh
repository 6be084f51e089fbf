#!/usr/bin/env bash
# Stage 1 of LLaVA-1.5 with the GS tower: train the projector on LAION-CC-SBU 558K (plain template),
# lr 1e-3, global batch 256, 1 epoch, ZeRO-2. Writes $OUTPUT_DIR/mm_projector.safetensors.
#   MODEL         a GS-LLaVA init folder (scripts/build_init_checkpoint.py), or a Llama/Vicuna checkpoint
#                 together with VISION_TOWER (a GS encoder folder)
#   DATA_PATH     LLaVA JSON (blip_laion_cc_sbu_558k.json); IMAGE_FOLDER its images; SPLAT_FOLDER the splat
#                 cache from `gsv fit-shards` (images missing there are an error unless FIT_MISSING=True)
#   NUM_GPUS, PER_DEVICE_BATCH (32), GLOBAL_BATCH (256), LR (1e-3), MAX_STEPS (-1 = one epoch), BF16, TF32,
#   WORKERS (4), MASTER_PORT, OUTPUT_DIR, DS_CONFIG (scripts/zero2.json), EXTRA_ARGS (appended)
source "$(dirname "${BASH_SOURCE[0]}")/_train_common.sh"
MODEL="${MODEL:-lmsys/vicuna-7b-v1.5}"
DATA_PATH="${DATA_PATH:-./playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json}"
OUTPUT_DIR="${OUTPUT_DIR:-./checkpoints/llava-gs-vicuna-7b-v1.5-pretrain}"
PER_DEVICE_BATCH="${PER_DEVICE_BATCH:-32}"
GLOBAL_BATCH="${GLOBAL_BATCH:-256}"
ACCUM="$(grad_accum "$GLOBAL_BATCH" "$PER_DEVICE_BATCH")"
model_args
launch --deepspeed "${DS_CONFIG:-scripts/zero2.json}" \
  "${MODEL_ARGS[@]}" \
  --version plain \
  --data_path "$DATA_PATH" \
  --fit_missing "${FIT_MISSING:-False}" \
  --mm_projector_type mlp2x_gelu \
  --tune_mm_mlp_adapter True \
  --mm_vision_select_layer -2 \
  --mm_use_im_start_end False \
  --mm_use_im_patch_token False \
  --output_dir "$OUTPUT_DIR" \
  --num_train_epochs 1 \
  --per_device_train_batch_size "$PER_DEVICE_BATCH" \
  --gradient_accumulation_steps "$ACCUM" \
  --save_strategy steps --save_steps 24000 --save_total_limit 1 \
  --learning_rate "${LR:-1e-3}" \
  --weight_decay 0. \
  --warmup_ratio 0.03 \
  --lr_scheduler_type cosine \
  --logging_steps 1 \
  --gradient_checkpointing True \
  --lazy_preprocess True
