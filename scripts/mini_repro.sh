#!/usr/bin/env bash
# GaussianVision in miniature, end to end on CPU with the project's real commands:
#   world data (train / val / test scenes) → RGB CLIP teacher from scratch (open_clip_train) → splats at 2
#   budgets (gsv fit-shards, with teacher embeddings) → GS encoder stage 1 + stage 2 (K = 64 and 32, the
#   196/98-token equivalents at 64²) → zero-shot GS vs RGB → tiny RGB-LLaVA, GS-LLaVAs and the blind GS-LLaVA
#   (trained on one blank image: the no-vision floor) through scripts/pretrain.sh + scripts/finetune.sh
#   (DeepSpeed, CPU) → after every model of every seed is trained, lmms-eval once on the validation questions
#   (where every choice is made) and the test questions (+ shuffled-image control)
#   → eval/results/mini_repro.{md,json,png} via eval.mini.report, and the demo model chosen on validation
#   (eval.mini.ship_demo).
#   bash scripts/mini_repro.sh            the full run (time per stage: eval/results/mini_repro.md; NTRAIN, BUDGETS, ... override)
#   bash scripts/mini_repro.sh --smoke    every stage at toy size (a few minutes; CI runs it)
#   bash scripts/mini_repro.sh --demo     one small GS-LLaVA only (N = 64, K = 64; no RGB-LLaVA, zero-shot or
#                                         evaluation) for scripts/demo.sh, in a few minutes
#   --head-ablation (with the full run or --smoke) adds a GS encoder and its LLaVA with the full-width head
#                                         (Gaussian tokens and Perceiver at the ViT width 128, feed-forward ×4)
#                                         beside the default narrow one (GS_WIDTH = 64, feed-forward ×1), at the
#                                         middle budget
#   --seeds K (with the full run or --smoke) repeats everything after the shared data (world, teacher, splats,
#                                         LM) with seeds 0 … K−1: GS encoders, zero-shot, LLaVAs, evaluation;
#                                         the report gives mean ± between-seed s.d. (seed 0 in OUT, seed s in
#                                         OUT/seed<s>)
# Stages already finished (their outputs exist) are skipped on a rerun. OUT (outputs/mini_repro) holds all.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
SMOKE=0 DEMO=0 HEAD_ABLATION=0 SEEDS=1
USAGE="usage: bash scripts/mini_repro.sh [--smoke|--demo] [--head-ablation] [--seeds K]"
# the command as the report records it: the settings given in the environment first
COMMAND=""
for knob in OUT NTRAIN NVAL NTEST ZS CLIP_EPOCHS FIT_ITERS BUDGETS S1_STEPS S2_STEPS FT_EPOCHS PT_EPOCHS FT_LR LM_INIT \
  LABEL_SCALE CLIP_WORDS PT_WORDS ENC_WORDS_RATE FT_WORDS READING WARM_EPOCHS GS_WIDTH GS_FF_MULT GS_HEADS \
  PATCH_WEIGHT; do
  if [[ -n ${!knob+set} ]]; then printf -v COMMAND '%s%s=%q ' "$COMMAND" "$knob" "${!knob}"; fi
done
COMMAND="${COMMAND}bash scripts/mini_repro.sh${*:+ $*}"
while (( $# )); do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --demo) DEMO=1 ;;
    --head-ablation) HEAD_ABLATION=1 ;;
    --seeds=*) SEEDS=${1#--seeds=} ;;
    --seeds) [[ $# -ge 2 ]] || { echo "$USAGE (--seeds needs a count)" >&2; exit 2; }; SEEDS=$2; shift ;;
    *) echo "$USAGE" >&2; exit 2 ;;
  esac
  shift
done
[[ $SEEDS =~ ^[1-9][0-9]*$ ]] || { echo "mini_repro.sh: --seeds takes a count ≥ 1, not '$SEEDS'" >&2; exit 2; }
if (( DEMO && (SMOKE || HEAD_ABLATION || SEEDS > 1) )); then
  echo "mini_repro.sh: --demo trains one GS-LLaVA only; it does not combine with --smoke, --head-ablation or --seeds" >&2
  exit 2
fi
LM_INIT="${LM_INIT:-pretrained}"
case "$LM_INIT" in
  pretrained|random) ;;
  *) echo "mini_repro.sh: LM_INIT (the LLaVAs' language model) must be 'pretrained' (eval/mini/lm) or 'random', not '$LM_INIT'" >&2; exit 2 ;;
esac
OUT="${OUT:-outputs/mini_repro$( ((SMOKE)) && echo _smoke || true)$( ((DEMO)) && echo _demo || true)}"
if [[ $DEMO == 1 ]]; then
  NTRAIN=1000 NVAL=20 NTEST=50 ZS=2 CLIP_EPOCHS=10 CLIP_BATCH=128 FIT_ITERS=60 BUDGETS="64" S1_STEPS=150 S2_STEPS=30
  FT_EPOCHS=1.5 PT_EPOCHS=1 MAX_STEPS=-1 KS="64"
elif [[ $SMOKE == 1 ]]; then
  NTRAIN=64 NVAL=24 NTEST=24 ZS=2 CLIP_EPOCHS=1 CLIP_BATCH=16 FIT_ITERS=10 BUDGETS="16 36" S1_STEPS=4 S2_STEPS=2
  FT_EPOCHS=1 PT_EPOCHS=1 MAX_STEPS=2 KS="16 8"
else
  # sized by measured stage costs on 2 cores (eval/results/mini_repro.md, "Time per stage"); the reasoning
  # behind each default, and what is left to re-check on validation: docs/mini.md
  NTRAIN="${NTRAIN:-2000}" NVAL="${NVAL:-250}" NTEST="${NTEST:-250}" ZS="${ZS:-8}" CLIP_EPOCHS="${CLIP_EPOCHS:-8}" CLIP_BATCH=128
  FIT_ITERS="${FIT_ITERS:-70}" BUDGETS="${BUDGETS:-64 144}" S1_STEPS="${S1_STEPS:-1200}" S2_STEPS="${S2_STEPS:-150}"
  FT_EPOCHS="${FT_EPOCHS:-3}" PT_EPOCHS="${PT_EPOCHS:-3}" MAX_STEPS=-1 KS="64 32"
  # reading, on in the full run (--demo and --smoke keep the small labels and no word images unless asked)
  LABEL_SCALE="${LABEL_SCALE:-2}" CLIP_WORDS="${CLIP_WORDS:-1000}" PT_WORDS="${PT_WORDS:-1000}"
  FT_WORDS="${FT_WORDS:-1000}" ENC_WORDS_RATE="${ENC_WORDS_RATE:-0.3}"
fi
# reading (eval/mini/world.py: word_scenes; eval/mini/questions.py: with_reading): word labels LABEL_SCALE × larger, CLIP_WORDS
# label-only pairs for the teacher, PT_WORDS label-only captions in LLaVA's stage 1 ("The word CAT."), FT_WORDS
# of those asked their word in finetuning, each reading question asked READING times in finetuning, and
# WARM_EPOCHS epochs of finetuning on the FT_WORDS reading questions alone before it (a warm-up run of
# finetune.sh; one made RGB-LLaVA read on both of two seeds, at ~1.5 min per LLaVA). ENC_WORDS_RATE: with
# PT_WORDS, the rate the GS encoders draw the label-only images at, against the scenes'
# (gs_encoder.train --data-upsampling-factors 1 RATE; 0: the scenes alone). What each of them is for:
# docs/mini.md, "Reading"
LABEL_SCALE="${LABEL_SCALE:-1}" CLIP_WORDS="${CLIP_WORDS:-0}" PT_WORDS="${PT_WORDS:-0}" FT_WORDS="${FT_WORDS:-0}"
READING="${READING:-1}" WARM_EPOCHS="${WARM_EPOCHS:-0}" ENC_WORDS_RATE="${ENC_WORDS_RATE:-1}"
if ! [[ $ENC_WORDS_RATE =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]]; then
  echo "mini_repro.sh: ENC_WORDS_RATE (the rate the GS encoders draw the label-only images at, against the" \
    "scenes'; 0: the scenes alone) must be a number ≥ 0, got '$ENC_WORDS_RATE'" >&2
  exit 2
fi
if ! [[ $WARM_EPOCHS =~ ^[0-9]+$ ]] || (( WARM_EPOCHS > 0 && FT_WORDS == 0 )); then
  echo "mini_repro.sh: WARM_EPOCHS (epochs of the reading warm-up) must be an int ≥ 0, and it needs FT_WORDS > 0" \
    "(the label-only images asked their word, which it trains on); got WARM_EPOCHS=$WARM_EPOCHS FT_WORDS=$FT_WORDS" >&2
  exit 2
fi
mkdir -p "$OUT"
CFG=eval/mini/mini-vit.json
# the GS head narrower than the mini ViT's 128, as the default head is narrower than ViT-B/16's 768
# (docs/encoder.md); --head-ablation adds the full-width head (128, feed-forward ×4)
GS_WIDTH="${GS_WIDTH:-64}" GS_FF_MULT="${GS_FF_MULT:-1}" GS_HEADS="${GS_HEADS:-2}"
# stage 1's patch-token term (gs_encoder.train --patch-weight; 0: the CLS embedding only, the paper's stage 1)
PATCH_WEIGHT="${PATCH_WEIGHT:-0}"
JUDGE_PORT="${JUDGE_PORT:-18771}"
T0=$(date +%s)
TIMES="$OUT/timings.tsv"  # one line per stage start; eval.mini.report turns the last invocation into a table
# the run's start and commit (the report names these, not its own time and commit)
printf '%s\t# run %s commit %s\n' "$T0" "$(date -Iseconds)" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" >>"$TIMES"
stamp() {
  echo "== [$(( $(date +%s) - T0 ))s] $*"
  printf '%s\t%s\n' "$(date +%s)" "$*" >>"$TIMES"
}
done_or() {  # done_or PATH: PATH exists, so its stage is skipped (and counted as skipped in TIMES)
  [[ -e "$1" ]] || return 1
  echo "   (done: $1)"
  printf '%s\t# skipped %s\n' "$(date +%s)" "$1" >>"$TIMES"
}

stamp "world: $NTRAIN train / $NVAL validation / $NTEST test scenes"
done_or "$OUT/data/test_questions.json" || \
  python -m eval.mini.data --out "$OUT/data" --train "$NTRAIN" --val "$NVAL" --test "$NTEST" --zeroshot-per-class "$ZS" \
    --label-scale "$LABEL_SCALE" --clip-words "$CLIP_WORDS" --pretrain-words "$PT_WORDS" \
    --finetune-words "$FT_WORDS" --reading "$READING"
done_or "$OUT/tasks/_mw_all_blank.yaml" || \
  python -m eval.mini.tasks --data "$OUT/data" --out "$OUT/tasks" --shuffled --blank

stamp "RGB CLIP teacher from scratch (open_clip_train, $CLIP_EPOCHS epochs)"
CLIP_CKPT="$OUT/runs/rgb-clip/checkpoints/epoch_${CLIP_EPOCHS}.pt"
if ! done_or "$CLIP_CKPT"; then
  rm -rf "$OUT/runs/rgb-clip"
  n_shards=$(ls "$OUT"/data/shards/clip-*.tar | wc -l)
  last=$(printf "%04d" $((n_shards - 1)))
  python -m eval.mini.train_clip --model-config "$CFG" --train-data "$OUT/data/shards/clip-{0000..$last}.tar" \
    --train-num-samples "$((2 * NTRAIN + CLIP_WORDS))" --dataset-type webdataset --batch-size "$CLIP_BATCH" --epochs "$CLIP_EPOCHS" --lr 1e-3 \
    --warmup 50 --wd 0.1 --workers 0 --precision fp32 --logs "$OUT/runs" --name rgb-clip \
    --save-frequency "$CLIP_EPOCHS" --seed 0 --log-every-n-steps 20
fi

# the images of each split's captions: its scenes (splats/n$n/<split>, the GS encoders' data) and, with
# PT_WORDS, the label-only images (splats/n$n/<split>_words, for LLaVA's stage 1 only)
for n in $BUDGETS; do
  stamp "splats: N = $n, $FIT_ITERS iterations, 64² canvas (+ teacher embeddings)"
  for split in train test; do
    done_or "$OUT/splats/n$n/.$split.done" || {
      gsv fit-shards "$OUT/data/${split}_pretrain.json" --image-folder "$OUT/data/images" -o "$OUT/splats/n$n" \
        --num-gaussians "$n" --iters "$FIT_ITERS" --size 64 --resize resize --batch-size 64 \
        --teacher "mini-vit:$CLIP_CKPT" --teacher-config "$CFG" -q
      touch "$OUT/splats/n$n/.$split.done"
    }
  done
  # the blind floor's one blank image
  done_or "$OUT/splats/n$n/blank.gs.npy" || \
    gsv fit-shards "$OUT/data/blank.json" --image-folder "$OUT/data/images" -o "$OUT/splats/n$n" \
      --num-gaussians "$n" --iters "$FIT_ITERS" --size 64 --resize resize --batch-size 64 -q
done

if [[ $DEMO == 0 ]]; then
  stamp "RGB twin encoder (the teacher's vision tower) for RGB-LLaVA"
  done_or "$OUT/encoders/rgb/model.safetensors" || gsv encoder-from-clip --clip-model mini-vit --model-config "$CFG" \
    --clip-pretrained "$CLIP_CKPT" --input rgb -o "$OUT/encoders/rgb"
fi

# the Vicuna stand-in: eval/mini/lm, a small Llama pretrained on the world's texts (captions in place of the
# images, and the captions themselves), shipped like a downloaded checkpoint and rebuilt by
# `python -m eval.mini.pretrain_lm` when absent; LM_INIT=random gives the ablation with an untrained LM
if [[ $LM_INIT == random ]]; then
  stamp "language model stand-in (BPE tokenizer on the world's texts + random Llama)"
  done_or "$OUT/lm/model.safetensors" || python -m eval.mini.make_lm --data "$OUT/data" --out "$OUT/lm"
else
  stamp "language model stand-in (eval/mini/lm: Llama pretrained on the world's texts)"
  if [[ ! -e eval/mini/lm/model.safetensors ]]; then  # rebuild it as shipped (eval/mini/pretrain_lm.py)
    [[ -e eval/mini/lm.base/model.safetensors ]] || python -m eval.mini.pretrain_lm --out eval/mini/lm.base
    python -m eval.mini.pretrain_lm --init eval/mini/lm.base --out eval/mini/lm --caption-fraction 0.2 \
      --steps 500 --schedule-steps 500 --lr 5e-4 --warmup 20
  fi
  done_or "$OUT/lm/model.safetensors" || { rm -rf "$OUT/lm.tmp"; cp -r eval/mini/lm "$OUT/lm.tmp"; mv "$OUT/lm.tmp" "$OUT/lm"; }
fi

# ---- from here on, once per seed: seed 0 writes to OUT, seed s > 0 to OUT/seed<s> ----
MID_N=$(echo "$BUDGETS" | awk '{print ($2 != "" ? $2 : $1)}')  # the middle budget (the only one, if one)
K1=${KS%% *}
gs_encoder() {  # gs_encoder RUN SEED NAME N K GS_WIDTH GS_FF_MULT HEADS
  local run=$1 seed=$2 name=$3 n=$4 k=$5 width=$6 ff=$7 heads=$8
  stamp "GS encoder $name: stage 1 (distillation to the RGB CLIP) + stage 2 (CLIP adaptation)$SEED_LABEL"
  done_or "$run/encoders/$name/stage2/final/model.safetensors" && return 0
  # the scenes and, with PT_WORDS, the label-only images too (the teacher learnt to read on such images; GS
  # n144-k64 encoder zero-shot on the test words, 12 choices: 8.9% from the scenes alone, 17.8% with them)
  local data=(--data "$OUT/splats/n$n/train")
  if (( PT_WORDS > 0 )) && ! [[ $ENC_WORDS_RATE =~ ^[0.]+$ ]]; then
    data+=("$OUT/splats/n$n/train_words" --data-upsampling-factors 1 "$ENC_WORDS_RATE")
  fi
  python -m gs_encoder.train --stage 1 "${data[@]}" --clip-model mini-vit \
    --clip-pretrained "$CLIP_CKPT" --model-config "$CFG" --num-tokens "$k" --gs-width "$width" --gs-ff-mult "$ff" \
    --resampler-heads "$heads" --seed "$seed" --patch-weight "$PATCH_WEIGHT" \
    --output-dir "$run/encoders/$name/stage1" --batch-size 64 --lr 1e-3 --warmup-steps 20 --max-steps "$S1_STEPS" \
    --num-workers 0 --save-every 0
  python -m gs_encoder.train --stage 2 "${data[@]}" --clip-model mini-vit \
    --clip-pretrained "$CLIP_CKPT" --model-config "$CFG" --encoder "$run/encoders/$name/stage1/final" \
    --output-dir "$run/encoders/$name/stage2" --batch-size 64 --lr 3e-4 --warmup-steps 10 --seed "$seed" \
    --max-steps "$S2_STEPS" --num-workers 0 --save-every 0
}

# LLaVA's scripts turn gradient checkpointing on (a 7B model needs it); a 1 M-parameter LM on a CPU only
# pays its recomputation, so it is off here
NO_CKPT="--gradient_checkpointing False"
# finetune: the projector keeps pretrain.sh's 1e-3; the LM, pretrained unless LM_INIT=random, moves slower
FT_LR="${FT_LR:-$([[ $LM_INIT == random ]] && echo 1e-3 || echo 3e-4)}"
llava() {  # llava RUN SEED NAME ENCODER_DIR SPLAT_FOLDER N [DATA_SUFFIX]: DATA_SUFFIX _blank gives the blind floor
  local run=$1 seed=$2 name=$3 enc=$4 splats=$5 n=$6 data=${7:-}
  local dir="$run/llava/$name" warm=""
  (( WARM_EPOCHS > 0 )) && warm=" → reading warm-up"
  stamp "LLaVA $name: init → pretrain.sh (projector)$warm → finetune.sh (projector + LM)$SEED_LABEL"
  done_or "$dir/final/model.safetensors" && return 0
  python scripts/build_init_checkpoint.py --lm "$OUT/lm" --encoder "$enc" --output "$dir/init" \
    --dtype float32 --num-gaussians "$n" --fit-iters "$FIT_ITERS" --seed "$seed" --overwrite >/dev/null
  local common=(IMAGE_FOLDER="$OUT/data/images" NUM_GPUS=1 WORKERS=0
                MAX_STEPS="$MAX_STEPS" MASTER_PORT="${MASTER_PORT:-29581}" DS_CONFIG=scripts/zero2.json)
  [[ -n "$splats" ]] && common+=(SPLAT_FOLDER="$splats")
  env "${common[@]}" MODEL="$dir/init" DATA_PATH="$OUT/data/train_pretrain$data.json" OUTPUT_DIR="$dir/pretrain" \
    PER_DEVICE_BATCH=32 GLOBAL_BATCH=32 LR=1e-3 EXTRA_ARGS="--num_train_epochs $PT_EPOCHS $NO_CKPT --seed $seed" bash scripts/pretrain.sh
  local from=(MODEL="$dir/init" PROJECTOR="$dir/pretrain/mm_projector.safetensors")
  finetune() {  # finetune EPOCHS DATA OUTPUT: projector + LM from "${from[@]}"
    env "${common[@]}" "${from[@]}" PER_DEVICE_BATCH=16 GLOBAL_BATCH=16 LR="$FT_LR" DATA_PATH="$2" OUTPUT_DIR="$3" \
      EXTRA_ARGS="--num_train_epochs $1 --mm_projector_lr 1e-3 $NO_CKPT --seed $seed" bash scripts/finetune.sh
  }
  if (( WARM_EPOCHS > 0 )); then  # on the label-only images' reading questions alone first
    finetune "$WARM_EPOCHS" "$OUT/data/train_reading$data.json" "$dir/warm"
    from=(MODEL="$dir/warm" PROJECTOR=)  # train on from the warm-up's folder, its projector included
  fi
  finetune "$FT_EPOCHS" "$OUT/data/train_finetune$data.json" "$dir/final"
}

if [[ $DEMO == 0 ]]; then
  python -m eval.mini_judge --port "$JUDGE_PORT" >/dev/null 2>&1 &
  JUDGE=$!
  trap 'kill $JUDGE 2>/dev/null || true' EXIT
  export OPENAI_API_URL="http://127.0.0.1:$JUDGE_PORT/v1" OPENAI_API_KEY=local HF_DATASETS_OFFLINE=1
fi
evaluate() {  # evaluate RUN: lmms-eval on the validation and test questions (+ the test's shuffled-image control)
  local run=$1 model name out splats tasks n
  stamp "lmms-eval on the world's validation and test questions (six kinds) and the test's shuffled-image control$SEED_LABEL"
  for model in "$run"/llava/*/final; do
    name=$(basename "$(dirname "$model")")
    out="$run/vqa/$name"
    done_or "$out/.done" && continue
    splats=""
    if [[ $name != rgb ]]; then n=${name#*-n}; n=${n%%-*}; splats=",splat_cache=$OUT/eval_cache/n$n"; fi
    tasks=mwval_all,mw_all,mw_all_shuffled
    [[ $name == blind-* ]] && tasks=mwval_all_blank,mw_all_blank  # asked with the one blank image it was trained on
    rm -rf "$out"
    python -m lmms_eval --model llava_gs --model_args "pretrained=$model,progress=false$splats" \
      --tasks "$tasks" --include_path "$OUT/tasks" --batch_size 32 --output_path "$out" \
      --log_samples --verbosity WARNING
    touch "$out/.done"
  done
}

for (( seed = 0; seed < SEEDS; seed++ )); do
  RUN="$OUT$( ((seed)) && echo "/seed$seed" || true)"
  SEED_LABEL="$( ((SEEDS > 1)) && echo ", seed $seed" || true)"
  for k in $KS; do
    for n in $BUDGETS; do
      [[ $k != "$K1" && $n != "$MID_N" ]] && continue  # the half-token encoder only at the middle budget
      gs_encoder "$RUN" "$seed" "gs-n$n-k$k" "$n" "$k" "$GS_WIDTH" "$GS_FF_MULT" "$GS_HEADS"
    done
  done
  # the head-size ablation: the Perceiver at the mini ViT's width (128) with feed-forward ×4
  (( HEAD_ABLATION )) && gs_encoder "$RUN" "$seed" "gs-n$MID_N-k$K1-wide" "$MID_N" "$K1" 128 4 4

  [[ $DEMO == 0 ]] && stamp "zero-shot, GS vs RGB (CLIP_benchmark: single-object scenes, 24 classes; label-only scenes, 12 words)$SEED_LABEL"
  for enc in "$RUN"/encoders/gs-*/stage2/final; do
    [[ $DEMO == 1 ]] && break
    name=$(basename "$(dirname "$(dirname "$enc")")")
    n=${name#gs-n}; n=${n%%-*}
    # zeroshot: single-object scenes, 24 classes; zeroshot_words (reading): label-only scenes, the 12 words
    for zs in zeroshot:mini_world zeroshot_words:mini_words; do
      dir=${zs%%:*}
      done_or "$RUN/$dir/$name/zeroshot.json" || python -m eval.zeroshot --gs "$enc" --clip-model mini-vit \
        --clip-pretrained "$CLIP_CKPT" --model-config "$CFG" --datasets "wds/${zs#*:}" --dataset-root "$OUT/data/$dir" \
        --num-gaussians "$n" --fit-iters "$FIT_ITERS" --canvas 64 --resize resize --batch-size 64 --num-workers 0 \
        -o "$RUN/$dir/$name"
    done
  done

  # the RGB twin encoder is the teacher's tower itself (no training), shared by every seed
  [[ $DEMO == 1 ]] || llava "$RUN" "$seed" rgb "$OUT/encoders/rgb" "" 64
  for enc in "$RUN"/encoders/gs-*/stage2/final; do
    name=$(basename "$(dirname "$(dirname "$enc")")")
    n=${name#gs-n}; n=${n%%-*}
    llava "$RUN" "$seed" "$name" "$enc" "$OUT/splats/n$n" "$n"
  done
  if [[ $DEMO == 1 ]]; then continue; fi
  # the blind floor: the default GS-LLaVA's pipeline, encoder and data with every image the one blank image
  llava "$RUN" "$seed" "blind-n$MID_N-k$K1" "$RUN/encoders/gs-n$MID_N-k$K1/stage2/final" "$OUT/splats/n$MID_N" \
    "$MID_N" _blank
done
if [[ $DEMO == 1 ]]; then
  stamp "done: $(ls -d "$OUT"/llava/*/final)"
  exit 0
fi
# scored once, at the end, after every model of every seed is trained; choices read the validation scores only
for (( seed = 0; seed < SEEDS; seed++ )); do
  RUN="$OUT$( ((seed)) && echo "/seed$seed" || true)"
  SEED_LABEL="$( ((SEEDS > 1)) && echo ", seed $seed" || true)"
  evaluate "$RUN"
done

stamp "report"
RESULTS="$([[ $SMOKE == 1 ]] && echo "$OUT/report" || echo eval/results)/mini_repro"
python -m eval.mini.report --out "$OUT" --seeds "$SEEDS" --results "$RESULTS" --command "$COMMAND"
# the GS-LLaVA with the best validation score ships with the repository for scripts/demo.sh (the smoke run
# writes it beside its report)
python -m eval.mini.ship_demo --out "$OUT" --report "$RESULTS.json" \
  --dest "$([[ $SMOKE == 1 ]] && echo "$OUT/report/demo_llava" || echo eval/mini/demo_llava)" --command "$COMMAND"
stamp "done"
