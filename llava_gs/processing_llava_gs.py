"""Processor of GS-LLaVA: text + images (fitted to splats on the fly) or splat files → model inputs.

`GaussianProcessor` is the image processor: photos (paths, PIL images, [3, H, W] tensors) are placed on the
S×S canvas exactly as the offline fitter does (`gs_encoder.load_image`, LLaVA's `pad` by default) and fitted
with `gs_encoder.fit_images`; `.gs.npy` files and [N, 8] tensors are used as they are. The batch is padded
to `gaussians [B, Nmax, 8]` + `gaussians_mask` (docs/encoder.md, GS-LLaVA). For the RGB twin tower it returns CLIP-
normalised `pixel_values` instead.

`LlavaGSProcessor` expands each `<image>` in the text into K image tokens and tokenizes; `prompt()` builds
an inference prompt with the training templates (`llava_gs.conversation`). Both save and load with
`save_pretrained` / `AutoProcessor.from_pretrained`.
"""

from __future__ import annotations

import contextvars
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin
from transformers.image_processing_utils import BaseImageProcessor

from cuda_ext.files import atomic_path
from gs_encoder import FitConfig, fit_images, load_image, load_splats, pad_splat_sets
from gs_encoder.image_io import canvas_from_pil, to_canvas
from gs_encoder.splat_io import validate_splats

from .conversation import IMAGE_TOKEN, image_token_id, tokenize_conversation

__all__ = [
    "FIT_OPTIONS",
    "PROCESSOR_FIT",
    "GaussianProcessor",
    "LlavaGSProcessor",
    "processor_for",
]

logger = logging.getLogger(__name__)

# The FitConfig fields a processor's on-the-fly fitting records in its `fit` dict (the others keep
# FitConfig's defaults): a model sees photos fitted the way its training splats were.
PROCESSOR_FIT = (
    "num_gaussians",
    "iters",
    "init",
    "init_weights",
    "lr_xy",
    "lr_chol",
    "lr_rgb",
    "lr_final",
    "lr_decay",
    "betas",
    "lr_warmup",
    "max_gaussians",
    "target_psnr",
    "target_bytes",
)
# The fitting options of the chat's flags, the lmms-eval model's arguments and load_pretrained_model → the
# FitConfig field each sets (their help text is the field's)
FIT_OPTIONS = {
    "num_gaussians": "num_gaussians",
    "fit_iters": "iters",
    "fit_init": "init",
    "fit_init_weights": "init_weights",
    "fit_max_gaussians": "max_gaussians",
    "fit_target_psnr": "target_psnr",
    "fit_target_bytes": "target_bytes",
}
# A processor's own learned-init weights (fit["init_weights"]) travel with it: save_pretrained copies them beside
# its config under this name and records the name; loading resolves a relative name against the folder.
WEIGHTS_FILE = "learned_init.safetensors"
_LOADING_FROM: contextvars.ContextVar[Path | None] = contextvars.ContextVar("loading_from", default=None)


def _is_splat_file(x) -> bool:
    return isinstance(x, (str, os.PathLike)) and str(x).endswith(".gs.npy")


class GaussianProcessor(BaseImageProcessor):
    """Images or splat sets → `gaussians` + `gaussians_mask` (GS tower) or `pixel_values` (RGB tower).

    `fit`: how photos are fitted on the fly, as FitConfig fields (PROCESSOR_FIT; one missing takes FitConfig's
    default). A saved processor records every one of them resolved, so it fits as it did whatever the
    defaults become."""

    model_input_names = ["gaussians", "gaussians_mask"]

    def __init__(
        self,
        fit: dict | None = None,
        canvas: int = 224,
        resize: str = "pad",
        tower_input: str = "gs",
        image_size: int = 224,
        fit_init_weights_id: str | None = None,
        **kwargs,
    ):
        stale = sorted(k for k in kwargs if k.startswith("fit_") or k == "num_gaussians")
        if stale:
            raise ValueError(
                f"fitting settings {', '.join(stale)} outside the `fit` dict: a processor config of an older "
                "format; write them as one `fit` dict of FitConfig fields (num_gaussians, iters, init, ...)"
            )
        super().__init__(**kwargs)
        if tower_input not in ("gs", "rgb"):
            raise ValueError(f"tower_input must be 'gs' or 'rgb', got {tower_input!r}")
        fit = dict(fit or {})
        unknown = sorted(set(fit) - set(PROCESSOR_FIT))
        if unknown:
            raise ValueError(
                f"unknown fitting setting(s) {', '.join(unknown)}; a processor's fit holds {', '.join(PROCESSOR_FIT)}"
            )
        defaults = FitConfig.defaults()
        self.fit = {k: fit.get(k, defaults[k]) for k in PROCESSOR_FIT}
        self.canvas, self.resize, self.tower_input, self.image_size = canvas, resize, tower_input, image_size
        self.fit_config()  # validates
        if tower_input == "rgb":
            self.model_input_names = ["pixel_values"]
        now = self.init_weights_id()
        if fit_init_weights_id and now and now != fit_init_weights_id:
            logger.warning(
                "GaussianProcessor: it was saved fitting photos from learned-init weights %s, but %s now holds "
                "%s (updated or replaced): photos fitted on the fly start from other weights than when it was "
                "saved. Set fit.init_weights to the file with id %s (gs_encoder.fitting.learned_init.weights_id) "
                "to fit as before.",
                fit_init_weights_id,
                self.fit["init_weights"] or "the shipped file",
                now,
                fit_init_weights_id,
            )

    @property
    def num_gaussians(self) -> int:
        """N of photos fitted on the fly."""
        return self.fit["num_gaussians"]

    def init_weights_id(self) -> str | None:
        """Identity of the learned-init weights this processor fits from; None when it does not use them."""
        from gs_encoder.fitting.learned_init import weights_id

        if self.tower_input != "gs" or self.fit_config().init != "learned":
            return None
        return weights_id(self.fit["init_weights"])

    def to_dict(self) -> dict:
        """As BaseImageProcessor.to_dict, with the fitting resolved (the warm-up by the init, so a reloaded
        processor fits as this one did, whatever the defaults later) and the identity of the learned-init
        weights fitted from."""
        d = super().to_dict()
        cfg = self.fit_config()
        d["fit"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.fit.items()}
        d["fit"]["lr_warmup"] = cfg.warmup_iters
        d.pop("fit_init_weights_id", None)
        weights = self.init_weights_id()
        if weights:
            d["fit_init_weights_id"] = weights
        saved_as = d.pop("_weights_saved_as", None)  # set by LlavaGSProcessor.save_pretrained
        if saved_as:
            d["fit"]["init_weights"] = saved_as
        return d

    @classmethod
    def from_dict(cls, image_processor_dict: dict, **kwargs):
        """As BaseImageProcessor.from_dict; a relative fit.init_weights names a file of the folder loaded from."""
        d = dict(image_processor_dict)
        fit = dict(d.get("fit") or {})
        folder, own = _LOADING_FROM.get(), fit.get("init_weights")
        if folder is not None and own and not Path(own).is_absolute():
            if (folder / own).is_file():
                fit["init_weights"] = str(folder / own)  # weights saved with the processor
            elif not Path(own).is_file():
                raise ValueError(
                    f"{folder / own}: this processor fits photos from its own learned-init weights "
                    f"(fit.init_weights = {own!r}), which are missing from {folder}; copy the file back (the "
                    "model was trained on splats fitted from them), or set fit.init_weights in its "
                    "processor_config.json to other weights"
                )
        if fit:
            d["fit"] = fit
        return super().from_dict(d, **kwargs)

    def update(self, **settings) -> None:
        """Set fitting settings (FitConfig fields of PROCESSOR_FIT, or canvas / resize; None leaves one as it
        is) and check they form a valid fit."""
        for name, value in settings.items():
            if name not in (*PROCESSOR_FIT, "canvas", "resize"):
                raise ValueError(f"unknown image-processor setting {name!r}")
            if value is None:
                continue
            if name in ("canvas", "resize"):
                setattr(self, name, value)
            else:
                self.fit[name] = tuple(float(b) for b in value) if name == "betas" else value
        self.fit_config()

    def fit_config(self, **overrides) -> FitConfig:
        """The FitConfig of on-the-fly fitting. A target (PSNR or bytes) is rate control's: it needs
        max_gaussians (a processor never stops a fixed-N fit early: the model would see other splats)."""
        fit = {**self.fit, **overrides}
        if fit.get("max_gaussians") is None and fit.get("target_psnr") is not None:
            raise ValueError(
                f"fit target_psnr {fit['target_psnr']} needs max_gaussians (rate control: N chosen per photo "
                "up to it); set both, or neither"
            )
        return FitConfig(**fit)

    def to_canvas(self, image) -> torch.Tensor:
        """A photo (path, PIL image, HWC uint8/float array or [3, H, W] tensor in [0, 1]) → [3, S, S]."""
        from PIL import Image

        if isinstance(image, (str, os.PathLike)):
            return load_image(image, self.canvas, self.resize)
        if isinstance(image, Image.Image):
            return canvas_from_pil(image, self.canvas, self.resize)
        if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] in (3, 4):
            arr = image[..., :3]
            arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
            return to_canvas(arr, self.canvas, self.resize)
        if isinstance(image, torch.Tensor) and image.dim() == 3 and image.shape[0] == 3:
            return to_canvas(image.permute(1, 2, 0).float(), self.canvas, self.resize)
        raise TypeError(
            f"cannot use {type(image).__name__} as an image: give a path, a PIL image, an HWC array "
            "or a [3, H, W] tensor in [0, 1]"
        )

    def fit_canvases(self, canvases: torch.Tensor, progress: bool = False, **overrides) -> list[torch.Tensor]:
        """[B, 3, S, S] canvases → one fitted [N, 8] splat set each (batched)."""
        return [r.splats for r in fit_images(canvases, self.fit_config(**overrides), progress=progress)]

    def __call__(self, images=None, splats=None, progress: bool = False, **kwargs) -> BatchFeature:
        return self.preprocess(images, splats, progress=progress)

    def preprocess(self, images=None, splats=None, progress: bool = False, **kwargs) -> BatchFeature:
        """`images` (list or single) and/or `splats` (list of [N, 8] tensors or .gs.npy paths) → a batch.

        Images come first in the batch, then splat sets, matching the order of `<image>` in the text when
        the caller passes them that way; pass one of the two for an unambiguous order.
        """
        images = [] if images is None else images if isinstance(images, (list, tuple)) else [images]
        splats = [] if splats is None else splats if isinstance(splats, (list, tuple)) else [splats]
        if not images and not splats:
            raise ValueError("give images or splats")
        if self.tower_input == "rgb":
            if splats:
                raise ValueError("an RGB vision tower takes images, not splat sets")
            from gs_encoder.teacher import clip_normalise

            canvases = torch.stack([self.to_canvas(im) for im in images])
            return BatchFeature({"pixel_values": clip_normalise(canvases, self.image_size)})
        sets: list[torch.Tensor | None] = []
        photos = []
        for im in images:
            if _is_splat_file(im):
                sets.append(load_splats(im))
            else:
                sets.append(None)
                photos.append(self.to_canvas(im))
        if photos:
            fitted = iter(self.fit_canvases(torch.stack(photos), progress=progress))
            sets = [s if s is not None else next(fitted) for s in sets]
        for k, sp in enumerate(splats):
            if _is_splat_file(sp):
                sets.append(load_splats(sp))
            else:
                sp = torch.as_tensor(sp, dtype=torch.float32)
                validate_splats(sp, f"splat set {k}")
                sets.append(sp)
        gaussians, mask = pad_splat_sets(sets)
        return BatchFeature({"gaussians": gaussians, "gaussians_mask": mask})


class LlavaGSProcessor(ProcessorMixin):
    """Tokenizer + GaussianProcessor; `<image>` → `num_image_tokens` image tokens (docs/encoder.md, GS-LLaVA)."""

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        num_image_tokens: int = 196,
        template: str = "vicuna_v1",
        chat_template=None,
        **kwargs,
    ):
        self.num_image_tokens, self.template = num_image_tokens, template
        self.image_token = IMAGE_TOKEN
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.image_token_id = image_token_id(tokenizer)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As ProcessorMixin.from_pretrained; a relative fit.init_weights names a file of the folder (WEIGHTS_FILE,
        written by save_pretrained)."""
        folder = Path(pretrained_model_name_or_path)
        token = _LOADING_FROM.set(folder if folder.is_dir() else None)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        finally:
            _LOADING_FROM.reset(token)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """As ProcessorMixin.save_pretrained; learned-init weights of the image processor's own
        (fit.init_weights) are copied beside the config as WEIGHTS_FILE and recorded by that name, so the
        folder fits photos as this processor does wherever it goes."""
        ip = self.image_processor
        own = getattr(ip, "fit", {}).get("init_weights")
        if not own:
            return super().save_pretrained(save_directory, *args, **kwargs)
        dest = Path(save_directory) / WEIGHTS_FILE
        if Path(own).resolve() != dest.resolve():
            with atomic_path(dest) as tmp:
                shutil.copyfile(own, tmp)
        ip._weights_saved_as = WEIGHTS_FILE
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            del ip._weights_saved_as

    def _vision(self, images, splats, progress) -> tuple[dict, int]:
        """(vision inputs, number of images/splat sets) for the model."""
        if images is None and splats is None:
            return {}, 0
        vision = dict(self.image_processor(images=images, splats=splats, progress=progress))
        return vision, next(iter(vision.values())).shape[0]

    def __call__(
        self,
        text: str | list[str] | None = None,
        images=None,
        splats=None,
        padding: bool | str = True,
        return_tensors: str = "pt",
        progress: bool = False,
        **kwargs,
    ) -> BatchFeature:
        """Text with `<image>` placeholders (one per image, in order) + images/splats → model inputs."""
        if text is None:
            raise ValueError("give text (with one <image> per image)")
        texts = [text] if isinstance(text, str) else list(text)
        vision, n_sets = self._vision(images, splats, progress)
        n_tags = sum(t.count(IMAGE_TOKEN) for t in texts)
        if n_tags != n_sets:
            raise ValueError(
                f"the text holds {n_tags} {IMAGE_TOKEN} but {n_sets} image(s)/splat set(s) were given"
            )
        expanded = [t.replace(IMAGE_TOKEN, IMAGE_TOKEN * self.num_image_tokens) for t in texts]
        enc = self.tokenizer(expanded, padding=padding, return_tensors=return_tensors, **kwargs)
        return BatchFeature({**enc, **vision})

    def prompt(
        self,
        conversations: list[dict],
        images=None,
        splats=None,
        template: str | None = None,
        progress: bool = False,
    ) -> BatchFeature:
        """One dialogue (LLaVA turns, the last from the human) → inputs for `generate`, built by the
        training tokenisation (`tokenize_conversation(..., add_generation_prompt=True)`)."""
        vision, n_sets = self._vision(images, splats, progress)
        ids, _ = tokenize_conversation(
            conversations,
            self.tokenizer,
            template or self.template,
            n_sets,
            self.num_image_tokens,
            add_generation_prompt=True,
        )
        input_ids = torch.tensor([ids])
        return BatchFeature({"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), **vision})

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self):
        return list(self.tokenizer.model_input_names) + list(self.image_processor.model_input_names)


def processor_for(model_config, tokenizer, **image_kwargs) -> LlavaGSProcessor:
    """The processor matching a LlavaGSConfig (K tokens, tower input, canvas = the tower's image size)."""
    v = model_config.vision_config
    image_kwargs.setdefault("canvas", v.image_size)
    image_processor = GaussianProcessor(tower_input=v.input, image_size=v.image_size, **image_kwargs)
    return LlavaGSProcessor(image_processor, tokenizer, num_image_tokens=model_config.image_seq_length)
