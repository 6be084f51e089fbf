#!/usr/bin/env bash
# Stage 2 of LLaVA-1.5 with the GS tower: instruction tuning of projector + LLM on the 665K mix (vicuna_v1),
# lr 2e-5, global batch 128, 1 epoch, ZeRO-3, starting from the stage-1 projector. The final folder loads
# with AutoModelForImageTextToText / llava_gs.builder.load_pretrained_model.
#   MODEL, VISION_TOWER as in pretrain.sh; PROJECTOR the stage-1 mm_projector.safetensors (set empty,
#   PROJECTOR=, to train on from the projector already inside a GS-LLaVA MODEL folder, e.g. an earlier finetune)
#   DATA_PATH (llava_v1_5_mix665k.json), IMAGE_FOLDER, SPLAT_FOLDER, FIT_MISSING
#   NUM_GPUS, PER_DEVICE_BATCH (16), GLOBAL_BATCH (128), LR (2e-5), MAX_STEPS, BF16, TF32, WORKERS,
#   MASTER_PORT, OUTPUT_DIR, DS_CONFIG (scripts/zero3.json), EXTRA_ARGS
source "$(dirname "${BASH_SOURCE[0]}")/_train_common.sh"
MODEL="${MODEL:-lmsys/vicuna-7b-v1.5}"
PROJECTOR="${PROJECTOR-./checkpoints/llava-gs-vicuna-7b-v1.5-pretrain/mm_projector.safetensors}"
projector_args=(--pretrain_mm_mlp_adapter "$PROJECTOR")
if [[ -z "$PROJECTOR" ]]; then
  if [[ -n "${VISION_TOWER:-}" || ! -f "$MODEL/config.json" ]]; then
    echo "finetune.sh: PROJECTOR is empty, so MODEL must be a GS-LLaVA folder (no VISION_TOWER) holding the" \
      "projector to train on; $MODEL is not one. Set PROJECTOR to the stage-1 mm_projector.safetensors" >&2
    exit 2
  fi
  echo "finetune.sh: PROJECTOR is empty: training on from the projector inside $MODEL" >&2
  projector_args=()
fi
DATA_PATH="${DATA_PATH:-./playground/data/llava_v1_5_mix665k.json}"
OUTPUT_DIR="${OUTPUT_DIR:-./checkpoints/llava-gs-vicuna-7b-v1.5}"
PER_DEVICE_BATCH="${PER_DEVICE_BATCH:-16}"
GLOBAL_BATCH="${GLOBAL_BATCH:-128}"
ACCUM="$(grad_accum "$GLOBAL_BATCH" "$PER_DEVICE_BATCH")"
lora_args=()
if [[ "${LORA:-False}" == True ]]; then
  lora_args=(--lora_enable True --lora_r "${LORA_R:-128}" --lora_alpha "${LORA_ALPHA:-256}" --mm_projector_lr 2e-5)
fi
model_args
launch --deepspeed "${DS_CONFIG:-scripts/zero3.json}" \
  "${MODEL_ARGS[@]}" "${lora_args[@]}" \
  --version v1 \
  --data_path "$DATA_PATH" \
  --fit_missing "${FIT_MISSING:-False}" \
  "${projector_args[@]}" \
  --mm_projector_type mlp2x_gelu \
  --mm_vision_select_layer -2 \
  --mm_use_im_start_end False \
  --mm_use_im_patch_token False \
  --image_aspect_ratio pad \
  --group_by_modality_length True \
  --output_dir "$OUTPUT_DIR" \
  --num_train_epochs 1 \
  --per_device_train_batch_size "$PER_DEVICE_BATCH" \
  --gradient_accumulation_steps "$ACCUM" \
  --save_strategy steps --save_steps 50000 --save_total_limit 1 \
  --learning_rate "${LR:-2e-5}" \
  --weight_decay 0. \
  --warmup_ratio 0.03 \
  --lr_scheduler_type cosine \
  --logging_steps 1 \
  --gradient_checkpointing True \
  --lazy_preprocess True
