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
