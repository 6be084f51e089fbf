#!/usr/bin/env bash
# The paper's VQA table through lmms-eval: six benchmarks for a GS-LLaVA checkpoint (and optionally an RGB
# one), then eval/vqa_table.py. Settings come from the environment:
#   MODEL          GS-LLaVA folder (required)            RGB_MODEL   a second folder for the RGB column
#   TASKS          real (default: scienceqa_img,textvqa_val,pope,mme,mmvet,gqa from the hub cache) or
#                  mini (the offline eval/tasks/mini copies, graded by the local stand-in MM-Vet judge)
#   MODEL_ARGS     extra llava_gs model args, e.g. num_gaussians=3136,fit_iters=3000,splat_cache=cache/
#   BATCH_SIZE (8), OUT (outputs/vqa), NUM_PROCESSES (1: data parallel with accelerate when > 1)
# Real MM-Vet needs a judge: OPENAI_API_KEY (and OPENAI_API_URL for a compatible server), as lmms-eval.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${VIRTUAL_ENV:-}" && -x "$ROOT/.venv/bin/python" ]]; then export PATH="$ROOT/.venv/bin:$PATH"; fi
cd "$ROOT"
: "${MODEL:?set MODEL to a GS-LLaVA folder}"
TASKS="${TASKS:-real}"
OUT="${OUT:-outputs/vqa}"
BATCH_SIZE="${BATCH_SIZE:-8}"
NUM_PROCESSES="${NUM_PROCESSES:-1}"
EXTRA="${MODEL_ARGS:+,$MODEL_ARGS}"
include=()
judge_pid=""
cleanup() { [[ -n "$judge_pid" ]] && kill "$judge_pid" 2>/dev/null || true; }
trap cleanup EXIT
if [[ "$TASKS" == mini ]]; then
  task_list=gv_mini
  include=(--include_path "$ROOT/eval/tasks/mini")
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
  port="${JUDGE_PORT:-18765}"
  python -m eval.mini_judge --port "$port" >/dev/null 2>&1 &
  judge_pid=$!
  export OPENAI_API_URL="http://127.0.0.1:$port/v1" OPENAI_API_KEY="${OPENAI_API_KEY:-local}"
  sleep 1
elif [[ "$TASKS" == real ]]; then
  task_list=scienceqa_img,textvqa_val,pope,mme,mmvet,gqa
else
  task_list="$TASKS"
fi

run() {  # run NAME CHECKPOINT
  local name=$1 ckpt=$2
  local launcher=(python -m lmms_eval)
  ((NUM_PROCESSES > 1)) && launcher=(accelerate launch --num_processes "$NUM_PROCESSES" -m lmms_eval)
  echo "== $name: $ckpt on $task_list"
  "${launcher[@]}" --model llava_gs --model_args "pretrained=$ckpt$EXTRA" --tasks "$task_list" "${include[@]}" \
    --batch_size "$BATCH_SIZE" --output_path "$OUT/$name" --verbosity "${VERBOSITY:-INFO}"
  if ! find "$OUT/$name" -name '*_results.json' | grep -q .; then
    echo "error: lmms-eval wrote no results for $name (see the log above)" >&2
    exit 1
  fi
}

run gs "$MODEL"
rgb_args=()
if [[ -n "${RGB_MODEL:-}" ]]; then
  run rgb "$RGB_MODEL"
  rgb_args=(--rgb "$OUT/rgb")
fi
python -m eval.vqa_table --gs "$OUT/gs" "${rgb_args[@]}" --label "${LABEL:-GS}" -o "$OUT/table"
