"""The miniature world's stand-in for Vicuna, pretrained: a small Llama that has learned the world's language
from text alone — each dialogue of the finetuning kind with the scene's caption written where the image
will later be, and the captions themselves — before any image is seen.

The shipped eval/mini/lm is built in two runs (what scripts/mini_repro.sh does when it is missing):

    python -m eval.mini.pretrain_lm --out eval/mini/lm.base   # 1750 steps of 64 dialogues, ~15 min on 2 cores
    python -m eval.mini.pretrain_lm --init eval/mini/lm.base --out eval/mini/lm --caption-fraction 0.2 \
        --steps 500 --schedule-steps 500 --lr 5e-4 --warmup 20   # + plain captions, ~5 min

LLaVA-1.5 starts from Vicuna, a model that already reads a question, finds what it asks about in its
context and answers in the expected style; only the projector (stage 1) and then the projector + LM
(stage 2) are trained on images. A randomly initialised LM cannot learn all of that from a few hundred
instruction-tuning steps, so this script gives the miniature what the real recipe has: a pretrained LM,
built once from a deterministic stream of scenes of their own seed range (disjoint from every split) and
shipped with the repository like a downloaded checkpoint. Its second run mixes plain captions in
(`--caption-fraction`), so that LLaVA's stage 1 starts from an LM that already writes the world's captions
and its projector has to carry only what the image adds. Why it stops where it does, with what was
measured while building it: docs/mini.md.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections import defaultdict
from pathlib import Path

from eval.mini import questions, world
from eval.mini.make_lm import new_llama, template_text
from llava_gs.conversation import tokenize_conversation

LM_SEED_BASE = 50_000_000  # scenes for LM pretraining: disjoint from world.scenes_for's train/test ranges


def caption_dialogues(seed: int) -> list[list[dict]]:
    """The finetuning dialogues of scene `seed`, with its caption in place of `<image>`."""
    scene = world.make_scene(seed)
    cap = world.caption(scene)
    return [questions.dialogue_turns(d, cap) for d in questions.dialogues(scene, questions.questions(scene))]


def plain_caption(seed: int, tok) -> dict:
    """Scene `seed`'s caption as a stage-1 (projector pretraining) sample without its image: LLaVA's plain
    template, where `<image>` is followed by the caption and the human text is dropped, with 0 image tokens
    — so the LM has learned to write the world's captions before the projector has to make it write them."""
    cap = world.caption(world.make_scene(seed))
    turns = [{"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": cap}]
    ids, labels = tokenize_conversation(turns, tok, "plain", 1, 0)
    return {"input_ids": ids, "labels": labels}


def texts(n_scenes: int = 3000):
    """Texts for the tokenizer: the chat template's fixed words, captions, questions and answers."""
    yield template_text()
    for i in range(n_scenes):
        scene = world.make_scene(LM_SEED_BASE + i)
        yield world.caption(scene)
        for q in questions.questions(scene):
            yield q["question"]
            yield questions.answer_style(q)


def evaluate(model, tok, scenes, template="vicuna_v1") -> dict[str, float]:
    """Greedy score per question kind (lmms-eval's scorers, eval.mini.score), with the caption given as text."""
    import torch

    from eval.mini.score import score
    from llava_gs.conversation import tokenize_conversation
    from llava_gs.data import left_pad_prompts

    qs = [(world.caption(s), q) for s in scenes for q in questions.questions(s)]
    res: dict[str, list[float]] = defaultdict(list)
    model.eval()
    with torch.no_grad():
        for i in range(0, len(qs), 64):
            batch = qs[i : i + 64]
            prompts = [
                tokenize_conversation(
                    [{"from": "human", "value": cap + "\n" + q["question"]}],
                    tok,
                    template,
                    0,
                    0,
                    add_generation_prompt=True,
                )[0]
                for cap, q in batch
            ]
            ids, att = left_pad_prompts(prompts, tok.pad_token_id)
            w = ids.shape[1]
            out = model.generate(
                input_ids=ids,
                attention_mask=att,
                max_new_tokens=8,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
            for (_, q), text in zip(
                batch, tok.batch_decode(out[:, w:], skip_special_tokens=True), strict=True
            ):
                res[q["kind"]].append(score(q["kind"], q, text, len(res[q["kind"]])))
    model.train()
    acc = {k: 100 * sum(v) / len(v) for k, v in sorted(res.items())}
    acc["all"] = 100 * sum(sum(v) for v in res.values()) / sum(len(v) for v in res.values())
    return acc


def caption_loss(model, tok, scenes) -> float:
    """Mean loss (nats per caption token) of the scenes' plain captions with no image: where LLaVA's stage-1
    projector pretraining starts from on this world (eval.mini.report shows the stage-1 loss it reaches)."""
    import torch

    from llava_gs.data import pad_text

    model.eval()
    with torch.no_grad():
        batch = pad_text([plain_caption(s.seed, tok) for s in scenes], tok.pad_token_id)
        loss = float(model(**batch).loss)
    model.train()
    return loss


def _save(out: Path, model, tok, log: list[dict]) -> None:
    """Write the LM folder under a temporary name, then put it in place of `out`."""
    from cuda_ext.files import atomic_path
    from llava_gs.builder import save_folder

    with atomic_path(out, folder=True) as tmp:
        save_folder(tmp, model, tok)
        (tmp / "pretrain_log.json").write_text(json.dumps(log, indent=1))


def _load_init(folder: Path):
    """(tokenizer, model, log) of an LM folder written by this script."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    if not (folder / "model.safetensors").is_file():
        raise SystemExit(
            f"pretrain_lm: {folder} has no model.safetensors; pass a folder this script wrote (--out)"
        )
    log_path = folder / "pretrain_log.json"
    log = json.loads(log_path.read_text()) if log_path.is_file() else []
    return AutoTokenizer.from_pretrained(folder), LlamaForCausalLM.from_pretrained(folder), log


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=1750, help="steps to train (the shipped LM: 1750)")
    ap.add_argument(
        "--schedule-steps",
        type=int,
        default=3000,
        help="length of the cosine schedule (stopping before its end)",
    )
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument(
        "--eval-scenes", type=int, default=80, help="validation scenes for the caption-QA accuracy"
    )
    ap.add_argument(
        "--caption-fraction",
        type=float,
        default=0.0,
        help="share of training samples that are plain captions (LLaVA's stage-1 template, caption as the "
        "target) beside the caption-in-place dialogues; 0 = dialogues only (the shipped LM)",
    )
    ap.add_argument(
        "--init",
        help="continue from this LM folder (a previous run's --out: its tokenizer, weights and log) instead of a "
        "fresh Llama; the scene stream starts past the first run's, the log continues its steps",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    return ap


class _Stream:
    """Training samples from a deterministic stream of scenes of the LM's own seed range: each scene's
    caption-in-place dialogues and, with `caption_fraction`, that share of plain captions; shuffled in a pool."""

    def __init__(self, tok, caption_fraction: float, continued: bool, seed: int):
        self.tok, self.caption_fraction = tok, caption_fraction
        self.rng, self.pool = random.Random(seed), []
        # the tokenizer's scenes are not trained on; a continued run takes scenes the first one did not see
        self.next_seed = LM_SEED_BASE + (2_000_000 if continued else 1_000_000)

    def batch(self, size: int) -> list[dict]:
        while len(self.pool) < 8 * size:
            dialogues = caption_dialogues(self.next_seed)
            for turns in dialogues:
                ids, labels = tokenize_conversation(turns, self.tok, "vicuna_v1", 0, 0)
                self.pool.append({"input_ids": ids, "labels": labels})
            if self.caption_fraction > 0:  # plain captions, that share of all samples on average
                expected = len(dialogues) * self.caption_fraction / (1 - self.caption_fraction)
                for _ in range(int(expected) + (self.rng.random() < expected % 1)):
                    self.pool.append(plain_caption(self.next_seed, self.tok))
            self.next_seed += 1
        self.rng.shuffle(self.pool)
        batch, self.pool = self.pool[:size], self.pool[size:]
        return batch


def main(argv=None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    for name in ("steps", "schedule_steps", "batch_size", "eval_every", "eval_scenes", "warmup"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not 0 <= args.caption_fraction < 1:
        ap.error(f"--caption-fraction must be in [0, 1), got {args.caption_fraction}")

    import torch
    from tqdm import tqdm

    from llava_gs import train_bpe_tokenizer
    from llava_gs.data import pad_text

    torch.set_num_threads(args.threads)
    if args.init:
        tok, model, log = _load_init(Path(args.init))
        first_step = log[-1]["step"] if log else 0
    else:
        tok = train_bpe_tokenizer(texts(), vocab_size=args.vocab)
        model = new_llama(tok, args.hidden, args.layers, args.heads, args.seed)
        log, first_step = [], 0
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.98))

    def lr_at(step):
        if step < args.warmup:
            return (step + 1) / args.warmup
        t = min(1.0, (step - args.warmup) / max(1, args.schedule_steps - args.warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    eval_scenes = world.scenes_for("val", args.eval_scenes)  # choices are made on validation (docs/mini.md)
    stream = _Stream(tok, args.caption_fraction, bool(args.init), args.seed)
    t0 = time.time()
    bar = tqdm(range(1, args.steps + 1), desc="LM pretraining", unit="step")
    losses = []
    for step in bar:
        loss = model(**pad_text(stream.batch(args.batch_size), tok.pad_token_id)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss))
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
        if step % args.eval_every == 0 or step == args.steps:
            entry = {
                "step": first_step + step,
                "minutes": round((time.time() - t0) / 60, 2),
                "loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
                "caption_loss": round(caption_loss(model, tok, eval_scenes), 4),
                **{k: round(v, 1) for k, v in evaluate(model, tok, eval_scenes).items()},
            }
            if args.init:
                entry |= {"continued_from": str(args.init), "caption_fraction": args.caption_fraction}
            log.append(entry)
            tqdm.write(json.dumps(entry))
            _save(Path(args.out), model, tok, log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
