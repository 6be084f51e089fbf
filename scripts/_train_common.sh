# Shared by pretrain.sh / finetune.sh / finetune_lora.sh (sourced). Every setting is an environment
# variable with LLaVA-1.5's value for Vicuna-7B on 8 GPUs as the default; see docs/llava.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${VIRTUAL_ENV:-}" && -x "$ROOT/.venv/bin/python" ]]; then
  export PATH="$ROOT/.venv/bin:$PATH"
fi
cd "$ROOT"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then HAS_GPU=1; else HAS_GPU=0; fi
NUM_GPUS="${NUM_GPUS:-$([[ $HAS_GPU == 1 ]] && nvidia-smi -L | wc -l || echo 1)}"
BF16="${BF16:-$([[ $HAS_GPU == 1 ]] && echo True || echo False)}"
TF32="${TF32:-$([[ $HAS_GPU == 1 ]] && echo True || echo False)}"
MASTER_PORT="${MASTER_PORT:-29500}"
WORKERS="${WORKERS:-4}"
MAX_STEPS="${MAX_STEPS:--1}"
MODEL_MAX_LENGTH="${MODEL_MAX_LENGTH:-2048}"
SPLAT_FOLDER="${SPLAT_FOLDER:-}"
IMAGE_FOLDER="${IMAGE_FOLDER:-./playground/data}"
EXTRA_ARGS="${EXTRA_ARGS:-}"

# the per-device batch and gradient accumulation that give GLOBAL_BATCH on NUM_GPUS
grad_accum() {
  local global=$1 per_device=$2
  local denom=$((per_device * NUM_GPUS))
  if ((global % denom != 0)); then
    echo "error: GLOBAL_BATCH $global is not a multiple of PER_DEVICE_BATCH $per_device × NUM_GPUS $NUM_GPUS" >&2
    exit 2
  fi
  echo $((global / denom))
}

# --model_name_or_path, and --vision_tower when VISION_TOWER is set (MODEL is then a Llama checkpoint)
model_args() {
  MODEL_ARGS=(--model_name_or_path "$MODEL")
  [[ -n "${VISION_TOWER:-}" ]] && MODEL_ARGS+=(--vision_tower "$VISION_TOWER")
  return 0
}

launch() {
  local splat_args=()
  [[ -n "$SPLAT_FOLDER" ]] && splat_args=(--splat_folder "$SPLAT_FOLDER")
  # shellcheck disable=SC2086
  deepspeed --num_gpus "$NUM_GPUS" --master_port "$MASTER_PORT" --module llava_gs.train \
    --image_folder "$IMAGE_FOLDER" "${splat_args[@]}" \
    --bf16 "$BF16" --tf32 "$TF32" --use_cpu "$([[ $HAS_GPU == 1 ]] && echo False || echo True)" \
    --max_steps "$MAX_STEPS" --model_max_length "$MODEL_MAX_LENGTH" \
    --dataloader_num_workers "$WORKERS" --report_to "${REPORT_TO:-none}" \
    "$@" $EXTRA_ARGS
}
