"""lmms-eval model `llava_gs`: GS-LLaVA benchmarked exactly like LLaVA, without forking lmms-eval.

    lmms-eval --model llava_gs --model_args pretrained=checkpoints/llava-gs-vicuna-7b-v1.5 \\
        --tasks scienceqa_img,textvqa_val,pope,mme,mmvet,gqa --batch_size 8 --output_path results/

Registered through the `lmms_eval.models` entry point (pyproject.toml → `MANIFEST` below). Model args:
`pretrained` (a GS-LLaVA folder or a LoRA adapter over one), `num_gaussians`, `fit_iters`, `fit_init`
(fitting of the task's photos on the fly; `fit_init=learned` for the learned initialiser, `fit_init_weights`
for its weights file), `splat_cache`
(folder of fitted sets, keyed by image content, reused across runs and tasks; `none` keeps them in
memory), `device`, `dtype`, `batch_size`, `conv_template`
(`vicuna_v1`, the training template), `seed`. Prompts are built by the same function as training prompts.
Decoding follows lmms-eval's own LLaVA wrapper: greedy unless the task asks for a temperature > 0, which
samples (whatever `do_sample` says; MM-Vet asks 0.2), seeded with `seed` before each batch.

`loglikelihood` returns the *summed* log-probability of the continuation tokens (the lm-eval-harness
convention; LLaVA's wrapper returned the negative mean loss) and whether greedy decoding would produce it.
`generate_until_multi_round` follows lmms-eval's protocol: round 0 uses the context, later rounds call the
task's `doc_to_text(doc, previous_output=..., round_idx=...)` until it signals the end; the dialogue (and
the image) carry over between rounds.
"""

from __future__ import annotations

import os
from collections import defaultdict

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest
from loguru import logger
from tqdm import tqdm

from ..builder import load_pretrained_model
from ..conversation import IMAGE_TOKEN, tokenize_conversation
from ..splat_cache import SplatCache, default_cache_dir

__all__ = ["MANIFEST", "LlavaGSLmms"]

MANIFEST = ModelManifest(model_id="llava_gs", simple_class_path="llava_gs.eval.lmms_plugin.LlavaGSLmms")


def _fit_options(**given) -> dict:
    """lmms-eval's model_args text of the fitting options (processing_llava_gs.FIT_OPTIONS) → typed values,
    each typed as its FitConfig field's flag; empty or absent: the model's processor's."""
    from gs_encoder import FitConfig

    from ..processing_llava_gs import FIT_OPTIONS

    out = {}
    for option, text in given.items():
        kind = FitConfig.argument(FIT_OPTIONS[option]).get("type", str)
        out[option] = None if text in (None, "") else kind(text)
    return out


def _bool(v) -> bool:
    return v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")


class LlavaGSLmms(lmms):
    """A simple (non-chat) lmms-eval model around `llava_gs.builder.load_pretrained_model`."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        num_gaussians: int | str | None = None,
        fit_iters: int | str | None = None,
        fit_init: str | None = None,
        fit_init_weights: str | None = None,
        fit_max_gaussians: int | str | None = None,
        fit_target_psnr: float | str | None = None,
        fit_target_bytes: int | str | None = None,
        splat_cache: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | str = 1,
        conv_template: str = "vicuna_v1",
        progress: bool | str = True,
        max_rounds: int | str = 32,
        seed: int | str = 0,
        **kwargs,
    ) -> None:
        super().__init__()
        self._rank, self._world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        if device is None or device == "cuda":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model, self.processor = load_pretrained_model(
            pretrained,
            device=self.device,
            dtype=getattr(torch, dtype) if dtype else None,
            **_fit_options(
                num_gaussians=num_gaussians,
                fit_iters=fit_iters,
                fit_init=fit_init,
                fit_init_weights=fit_init_weights,
                fit_max_gaussians=fit_max_gaussians,
                fit_target_psnr=fit_target_psnr,
                fit_target_bytes=fit_target_bytes,
            ),
        )
        self.tokenizer = self.processor.tokenizer
        self.batch_size_per_gpu = int(batch_size)
        self.conv_template = conv_template
        self.progress = _bool(progress)
        self.max_rounds = int(max_rounds)
        self.seed = int(seed)
        folder = None if str(splat_cache).lower() == "none" else (splat_cache or default_cache_dir())
        self.cache = SplatCache(self.processor.image_processor, folder)
        self.tower_input = self.processor.image_processor.tower_input

    # ---- shared pieces -------------------------------------------------------------------------------

    def _doc(self, task, split, doc_id):
        return self.task_dict[task][split][doc_id]

    def _vision(self, images: list) -> dict:
        """Images of a batch → the model's vision inputs (splats from the cache, or pixels for RGB)."""
        if not images:
            return {}
        if self.tower_input == "rgb":
            return dict(self.processor.image_processor(images=images))
        sets = self.cache.get(images, progress=self.progress)
        return dict(self.processor.image_processor(splats=sets))

    def _turn(self, context: str, n_images: int) -> str:
        """The task's context as the first human turn, with one `<image>` per image (LLaVA puts it first)."""
        context = context if isinstance(context, str) else context[0]
        missing = n_images - context.count(IMAGE_TOKEN)
        if missing > 0:
            context = "\n".join([IMAGE_TOKEN] * missing) + "\n" + context
        elif missing < 0:
            context = context.replace(IMAGE_TOKEN, "", -missing)
        return context

    def _ids(self, turns: list[dict], n_images: int, generation: bool) -> list[int]:
        ids, _ = tokenize_conversation(
            turns,
            self.tokenizer,
            self.conv_template,
            n_images,
            self.processor.num_image_tokens,
            add_generation_prompt=generation,
        )
        return ids

    def _generate(self, prompts: list[list[int]], vision: dict, gen_kwargs: dict) -> list[str]:
        """Left-padded batched generation; `until` strings cut the answers."""
        from ..data import left_pad_prompts

        pad = self.tokenizer.pad_token_id
        ids, attn = left_pad_prompts(prompts, pad)
        width = ids.shape[1]
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(gen_kwargs.get("temperature", 0) or 0)
        # lmms-eval's own LLaVA wrapper samples whenever temperature > 0, whatever do_sample says (MM-Vet's
        # YAML sets temperature 0.2 with do_sample false); we do the same, seeded so a rerun repeats it
        sample = temperature > 0
        if sample:
            torch.manual_seed(self.seed)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=attn.to(self.device),
                **{k: v.to(self.device) for k, v in vision.items()},
                max_new_tokens=int(gen_kwargs.get("max_new_tokens", 1024)),
                do_sample=sample,
                temperature=temperature if sample else None,
                top_p=gen_kwargs.get("top_p") if sample else None,
                num_beams=int(gen_kwargs.get("num_beams", 1) or 1),
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=pad,
            )
        texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        for stop in until:
            texts = [t.split(stop)[0] if stop else t for t in texts]
        return [t.strip() for t in texts]

    # ---- the lmms interface -------------------------------------------------------------------------

    def generate_until(self, requests: list[Instance]) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        groups = defaultdict(list)  # same generation settings → one batch stream
        for i, req in enumerate(requests):
            groups[repr(sorted(req.args[1].items(), key=lambda kv: kv[0]))].append(i)
        bar = tqdm(total=len(requests), desc="llava_gs generate", disable=not self.progress or self.rank != 0)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size_per_gpu):
                chunk = indices[start : start + self.batch_size_per_gpu]
                prompts, images = [], []
                for i in chunk:
                    context, gen_kwargs, doc_to_visual, doc_id, task, split = requests[i].args
                    visuals = list(doc_to_visual(self._doc(task, split, doc_id)) or [])
                    images += visuals
                    turn = {"from": "human", "value": self._turn(context, len(visuals))}
                    prompts.append(self._ids([turn], len(visuals), generation=True))
                answers = self._generate(prompts, self._vision(images), requests[chunk[0]].args[1])
                for i, a in zip(chunk, answers, strict=True):
                    results[i] = a
                    self.cache_hook.add_partial(
                        "generate_until", (requests[i].args[0], requests[i].args[1]), a
                    )
                bar.update(len(chunk))
        bar.close()
        logger.info(
            f"llava_gs splat cache: {self.cache.hits} hits, {self.cache.misses} fitted ({self.cache.folder})"
        )
        return results

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        out = []
        for req in tqdm(requests, desc="llava_gs loglikelihood", disable=not self.progress or self.rank != 0):
            context, doc_to_target, doc_to_visual, doc_id, task, split = req.args
            doc = self._doc(task, split, doc_id)
            target = doc_to_target if isinstance(doc_to_target, str) else doc_to_target(doc)
            visuals = list(doc_to_visual(doc) or [])
            turn = {"from": "human", "value": self._turn(context, len(visuals))}
            prompt = self._ids([turn], len(visuals), generation=True)
            cont = self.tokenizer(" " + str(target), add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt + cont], device=self.device)
            vision = {k: v.to(self.device) for k, v in self._vision(visuals).items()}
            with torch.no_grad():
                logits = self.model(input_ids=ids, **vision).logits[0, len(prompt) - 1 : -1].float()
            logp = torch.log_softmax(logits, dim=-1)
            target_ids = torch.tensor(cont, device=self.device)
            total = float(logp.gather(1, target_ids[:, None]).sum())
            greedy = bool((logp.argmax(-1) == target_ids).all())
            out.append((total, greedy))
            self.cache_hook.add_partial("loglikelihood", (context, target), (total, greedy))
        return out

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        results = []
        for req in tqdm(requests, desc="llava_gs multi-round", disable=not self.progress or self.rank != 0):
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = req.args
            doc = self._doc(task, split, doc_id)
            visuals = list(doc_to_visual(doc) or [])
            turns: list[dict] = []
            answers: list[str] = []
            info = None
            round_idx = 0
            while True:
                if round_idx >= self.max_rounds:
                    raise RuntimeError(f"{task} doc {doc_id}: no end signal after {self.max_rounds} rounds")
                if round_idx:
                    step = doc_to_text(
                        doc, previous_output=list(answers), round_idx=round_idx, previous_round_info=info
                    )
                    new_visuals, context, terminal, _, info = step
                    if terminal:
                        break
                    if new_visuals:  # a new picture starts a new dialogue, as in the chat
                        visuals, turns = list(new_visuals), []
                value = self._turn(context, len(visuals)) if not turns else str(context)
                turns.append({"from": "human", "value": value})
                prompt = self._ids(turns, len(visuals), generation=True)
                answer = self._generate([prompt], self._vision(visuals), gen_kwargs)[0]
                turns.append({"from": "gpt", "value": answer})
                answers.append(answer)
                round_idx += 1
            results.append(answers)
        return results
