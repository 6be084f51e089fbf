#!/usr/bin/env bash
# The README's first command: set up .venv (if needed), fit a photograph that ships with scikit-image at three
# Gaussian budgets (comparison PNGs and the table in outputs/demo/), then let the shipped GS-LLaVA answer
# questions about two test scenes of the mini world from their images.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
TRAIN_OWN=0
for arg in "$@"; do
  case "$arg" in
    --train-own) TRAIN_OWN=1 ;;
    *) echo "usage: bash scripts/demo.sh [--train-own]" >&2; exit 2 ;;
  esac
done
OUT="${OUT:-outputs/demo}"
ITERS="${ITERS:-1000}"
PHOTO="$(python -c 'import skimage, os; print(os.path.join(skimage.data_dir, "chelsea.png"))')"
mkdir -p "$OUT"
for n in 400 1600 3136; do
  echo "== $n Gaussians, $ITERS iterations =="
  gsv fit "$PHOTO" -o "$OUT/n$n" --num-gaussians "$n" --iters "$ITERS" --overwrite
  gsv render "$OUT/n$n/chelsea.gs.npy" --compare "$PHOTO" -o "$OUT/compare_n$n.png" --size 320
done
gsv info "$OUT/n3136/chelsea.gs.npy"
echo "comparison images: $(ls "$OUT"/compare_n*.png | tr '\n' ' ')"

# GS-LLaVA: questions about mini-world test scenes, answered from their images (splats fitted on the fly by
# the model's processor). The model is the one that ships in eval/mini/demo_llava (the best GS-LLaVA of the
# committed scripts/mini_repro.sh run; build.json says which and how it scored). --train-own trains a small
# one instead (`mini_repro.sh --demo`: world data, CLIP teacher, splats, GS encoder, GS-LLaVA; ~10 min on 2
# cores, resumable); DEMO_MODEL=folder asks any GS-LLaVA trained on the mini world.
SHIPPED=eval/mini/demo_llava
if [[ $TRAIN_OWN == 1 ]]; then
  echo "== training a small GS-LLaVA (bash scripts/mini_repro.sh --demo)"
  OUT=outputs/mini_repro_demo bash scripts/mini_repro.sh --demo
  echo "== your GS-LLaVA on two test scenes"
  python -m eval.mini.ask --model outputs/mini_repro_demo/llava/gs-n64-k64/final --data outputs/mini_repro_demo/data
else
  MODEL="${DEMO_MODEL:-$SHIPPED/model}"
  if [[ ! -f "$MODEL/model.safetensors" ]]; then
    echo "demo.sh: no GS-LLaVA at $MODEL (model.safetensors missing); restore it with 'git checkout -- $SHIPPED'," \
      "rebuild it with 'bash scripts/mini_repro.sh', or run 'bash scripts/demo.sh --train-own'" >&2
    exit 1
  fi
  echo "== GS-LLaVA ($MODEL) on two test scenes of the mini world"
  python -m eval.mini.ask --model "$MODEL" --scenes "$SHIPPED/scenes"
fi
