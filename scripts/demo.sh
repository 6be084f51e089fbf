#!/usr/bin/env bash
# The README's first command: set up .venv (if needed), then fit a photograph that ships with
# scikit-image at three Gaussian budgets and write the comparison PNGs and the table to outputs/demo/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
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

# GS-LLaVA: questions about a mini-world test image, with the model scripts/mini_repro.sh trains
MODEL="${DEMO_MODEL:-outputs/mini_repro/llava/gs-n144-k64/final}"
if [[ -f "$MODEL/model.safetensors" ]]; then
  IMG="$(ls outputs/mini_repro/data/images/test/*.png | head -1)"
  echo "== GS-LLaVA ($MODEL) on $IMG (scene: $(cat "${IMG%.png}.txt"))"
  python -m llava_gs.chat --model "$MODEL" --image "$IMG" --temperature 0 --max-new-tokens 16 --no-cache \
    --prompt "What shapes are in the image?" --prompt "How many shapes are in the image?"
else
  echo "(no GS-LLaVA checkpoint at $MODEL: run bash scripts/mini_repro.sh to train the miniature models)"
fi
