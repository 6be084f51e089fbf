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

# GS-LLaVA: questions about a mini-world test image. The model is the one scripts/mini_repro.sh trained when
# it exists; otherwise the demo trains its own small one (`mini_repro.sh --demo`: world data, CLIP teacher,
# splats, GS encoder stage 1 + 2, GS-LLaVA pretrain + finetune; a few minutes on 2 cores, resumable).
MODEL="${DEMO_MODEL:-outputs/mini_repro/llava/gs-n144-k64/final}"
DATA=outputs/mini_repro/data
if [[ ! -f "$MODEL/model.safetensors" ]]; then
  echo "== no full mini_repro checkpoint at $MODEL: training a small GS-LLaVA (bash scripts/mini_repro.sh --demo)"
  OUT=outputs/mini_repro_demo bash scripts/mini_repro.sh --demo
  MODEL=outputs/mini_repro_demo/llava/gs-n64-k64/final DATA=outputs/mini_repro_demo/data
fi
SCENE="${DEMO_SCENE:-0}"
mapfile -t QA < <(python - "$DATA" "$SCENE" <<'PY'
import json, sys
from pathlib import Path
from eval.mini.world import answer_style
data, k = Path(sys.argv[1]), int(sys.argv[2])
qs = json.loads((data / "test_questions.json").read_text())
image = sorted({q["image"] for q in qs})[k]
print(data / "images" / image)
for q in (q for q in qs if q["image"] == image):
    print(q["question"].replace("\n", "\\n") + "\t" + answer_style(q))  # newlines travel as \n
PY
)
IMG="${QA[0]}"
echo "== GS-LLaVA ($MODEL) on $IMG"
echo "   scene: $(cat "${IMG%.png}.txt")"
ARGS=()
for qa in "${QA[@]:1}"; do ARGS+=(--prompt "$(printf '%b' "${qa%%$'\t'*}")" --prompt /reset); done
python -m llava_gs.chat --model "$MODEL" --image "$IMG" --temperature 0 --max-new-tokens 16 --no-cache "${ARGS[@]}" \
  | grep -v '^\[conversation cleared\]$\|^USER: /reset$'
echo "== the true answers:"
for qa in "${QA[@]:1}"; do
  q="${qa%%$'\t'*}"
  echo "   ${q%%\\n*} → ${qa#*$'\t'}"
done
