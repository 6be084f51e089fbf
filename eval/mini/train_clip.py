"""Train the miniature RGB CLIP teacher from scratch with open_clip's own trainer (open_clip_train).

    python -m eval.mini.train_clip --train-data 'data/mini/shards/train-{0000..0003}.tar' \\
        --train-num-samples 4000 --dataset-type webdataset --batch-size 128 --epochs 10 --lr 1e-3 \\
        --workers 0 --logs runs/mini --name rgb-clip

Every argument goes to `open_clip_train.main` unchanged; this wrapper only registers the architecture
JSON (`--model-config`, default eval/mini/mini-vit.json: a ViT of width 128 on 64² images with 8² patches)
and selects it with `--model`, since open_clip's command line cannot load a JSON by path.
"""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).with_name("mini-vit.json")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    config = DEFAULT_CONFIG
    if "--model-config" in argv:
        i = argv.index("--model-config")
        config = Path(argv[i + 1])
        del argv[i : i + 2]
    from gs_encoder.teacher import register_model_config

    name = register_model_config(config)
    if "--model" not in argv:
        argv += ["--model", name]
    from open_clip_train.main import main as open_clip_main

    open_clip_main(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
