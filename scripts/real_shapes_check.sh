#!/usr/bin/env bash
# Real shapes without the weights: the parts of a real GS-LLaVA run with random weights (a GS encoder on
# open_clip's ViT-B-16, 196 tokens, 3136 Gaussians per image; a Llama with Vicuna-7B's config but 2 layers;
# the 32000-token Llama SentencePiece tokenizer) through the real commands on CPU:
#   eval.real_shapes prepare → gsv fit-shards (LLaVA JSON, N = 3136) → scripts/build_init_checkpoint.py →
#   scripts/pretrain.sh and scripts/finetune.sh under ZeRO-3 on 2 CPU ranks, 2 steps each, bf16, gradient
#   checkpointing, SDPA, one conversation longer than the context → python -m llava_gs.chat --prompt →
#   one lmms-eval task → eval/results/real_shapes.{md,json} (eval.real_shapes report).
# Settings: OUT (outputs/real_shapes, replaced), REPORT (eval/results/real_shapes), LM_LAYERS (2),
# CONTEXT (512: the model_max_length of both stages; 2048 is the real one, whose memory the report
# computes), FIT_ITERS (30), MASTER_PORT (29650). Every stage's log is in $OUT/logs/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${VIRTUAL_ENV:-}" && -x "$ROOT/.venv/bin/python" ]]; then export PATH="$ROOT/.venv/bin:$PATH"; fi
cd "$ROOT"
OUT="${OUT:-outputs/real_shapes}"
REPORT="${REPORT:-eval/results/real_shapes}"
LM_LAYERS="${LM_LAYERS:-2}"
CONTEXT="${CONTEXT:-512}"
FIT_ITERS="${FIT_ITERS:-30}"
PORT="${MASTER_PORT:-29650}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
rm -rf "$OUT"
mkdir -p "$OUT/logs"
LOGS="$OUT/logs"
TIMINGS=()
START=$(date +%s)

stage() {  # stage NAME COMMAND...: run it with its log in $LOGS/NAME.log; stop with the log's tail on failure
  local name=$1 t0
  shift
  t0=$(date +%s)
  echo "[real_shapes $(($(date +%s) - START))s] $name"
  if ! "$@" >"$LOGS/$name.log" 2>&1; then
    echo "error: stage '$name' failed; the end of $LOGS/$name.log:" >&2
    tail -40 "$LOGS/$name.log" >&2
    exit 1
  fi
  TIMINGS+=("\"$name\": $(($(date +%s) - t0))")
}

train_env=(
  MODEL="$OUT/init" IMAGE_FOLDER="$OUT/data/images" SPLAT_FOLDER="$OUT/splats" NUM_GPUS=2 PER_DEVICE_BATCH=1
  GLOBAL_BATCH=2 MAX_STEPS=2 WORKERS=0 DS_CONFIG=scripts/zero3.json BF16=True MODEL_MAX_LENGTH="$CONTEXT"
  EXTRA_ARGS="--attn_implementation sdpa" LLAVA_GS_RESOURCE_LOG="$LOGS/resources.jsonl"
)

stage prepare python -m eval.real_shapes prepare "$OUT" --lm-layers "$LM_LAYERS" --context "$CONTEXT"
stage fit gsv fit-shards "$OUT/data/pretrain.json" --image-folder "$OUT/data/images" -o "$OUT/splats" \
  --num-gaussians 3136 --iters "$FIT_ITERS" --size 224 --batch-size 8 -q
stage init python scripts/build_init_checkpoint.py --lm "$OUT/lm" --encoder "$OUT/encoder" --output "$OUT/init" \
  --dtype bfloat16 --num-gaussians 3136 --fit-iters "$FIT_ITERS"
stage pretrain env "${train_env[@]}" DATA_PATH="$OUT/data/pretrain.json" OUTPUT_DIR="$OUT/pretrain" \
  MASTER_PORT="$PORT" bash scripts/pretrain.sh
stage finetune env "${train_env[@]}" DATA_PATH="$OUT/data/finetune.json" OUTPUT_DIR="$OUT/finetune" \
  PROJECTOR="$OUT/pretrain/mm_projector.safetensors" MASTER_PORT="$((PORT + 1))" bash scripts/finetune.sh
long=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['long_sample'])" "$OUT/shapes.json")
if ! grep -q "sample $long: .* exceed max_length $CONTEXT; truncated" "$LOGS/finetune.log"; then
  echo "error: the finetune log has no truncation warning for sample $long ($LOGS/finetune.log)" >&2
  exit 1
fi
stage chat python -m llava_gs.chat --model "$OUT/finetune" --image "$OUT/data/images/coffee.jpg" --no-cache \
  --prompt "What is in the picture?" --temperature 0 --max-new-tokens 8 --fit-iters "$FIT_ITERS"
stage lmms_eval python -m lmms_eval --model llava_gs \
  --model_args "pretrained=$OUT/finetune,fit_iters=$FIT_ITERS,splat_cache=none,progress=false" \
  --tasks gv_pope --include_path eval/tasks/mini --limit 4 --batch_size 2 --output_path "$OUT/lmms"
if ! find "$OUT/lmms" -name '*_results.json' | grep -q .; then
  echo "error: lmms-eval wrote no results ($LOGS/lmms_eval.log)" >&2
  exit 1
fi
(IFS=,; echo "{${TIMINGS[*]}}") >"$LOGS/timings.json"
python -m eval.real_shapes report "$OUT" -o "$REPORT"
echo "[real_shapes $(($(date +%s) - START))s] done: $REPORT.md"
