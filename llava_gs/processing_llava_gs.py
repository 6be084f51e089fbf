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

from gs_encoder import FitConfig, fit_images, load_image, load_splats, pad_splat_sets
from gs_encoder.fitting.fit import PREVIOUS_RECORD
from gs_encoder.image_io import canvas_from_pil, to_canvas
from gs_encoder.splat_io import validate_splats

from .conversation import IMAGE_TOKEN, image_token_id, tokenize_conversation

__all__ = [
    "LEGACY_FIT_INIT",
    "LEGACY_FIT_OPTIMISER",
    "GaussianProcessor",
    "LlavaGSProcessor",
    "processor_for",
]

logger = logging.getLogger(__name__)

# The fitting optimiser of processor configs saved before these settings were recorded (2026-12-05): the
# FitConfig defaults of their day, filled in for each setting a config lacks. A model sees splats fitted the
# way its training splats were.
LEGACY_FIT_OPTIMISER = {f"fit_{k}": v for k, v in PREVIOUS_RECORD.items()}
# The init of processor configs saved before it was recorded resolved (2026-12-05): FitConfig's default then.
LEGACY_FIT_INIT = "learned"
# A processor's own learned-init weights (fit_init_weights) travel with it: save_pretrained copies them beside
# its config under this name and records the name; loading resolves a relative name against the folder.
WEIGHTS_FILE = "learned_init.safetensors"
_LOADING_FROM: contextvars.ContextVar[Path | None] = contextvars.ContextVar("loading_from", default=None)


# what GaussianProcessor.update may set
FITTING_SETTINGS = ("num_gaussians", "fit_iters", "fit_init", "fit_init_weights", "canvas", "resize")
FITTING_SETTINGS += tuple(LEGACY_FIT_OPTIMISER)


def _is_splat_file(x) -> bool:
    return isinstance(x, (str, os.PathLike)) and str(x).endswith(".gs.npy")


class GaussianProcessor(BaseImageProcessor):
    """Images or splat sets → `gaussians` + `gaussians_mask` (GS tower) or `pixel_values` (RGB tower)."""

    model_input_names = ["gaussians", "gaussians_mask"]

    def __init__(
        self,
        num_gaussians: int = 3136,
        fit_iters: int = 3000,
        fit_init: str | None = None,
        canvas: int = 224,
        resize: str = "pad",
        tower_input: str = "gs",
        image_size: int = 224,
        fit_lr: list[float] | None = None,
        fit_lr_final: float | None = None,
        fit_lr_decay: float | None = None,
        fit_betas: list[float] | None = None,
        fit_lr_warmup: int | None = None,
        fit_init_weights: str | None = None,
        fit_init_weights_id: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if tower_input not in ("gs", "rgb"):
            raise ValueError(f"tower_input must be 'gs' or 'rgb', got {tower_input!r}")
        self.num_gaussians, self.fit_iters, self.fit_init = num_gaussians, fit_iters, fit_init
        # the optimiser of on-the-fly fitting, saved with the processor (None: FitConfig's current default)
        defaults = FitConfig.defaults()
        lr = [defaults["lr_xy"], defaults["lr_chol"], defaults["lr_rgb"]] if fit_lr is None else fit_lr
        self.fit_lr = list(lr) if isinstance(lr, (list, tuple)) else lr  # Adam's step sizes; checked by _lr
        self.fit_lr_final = defaults["lr_final"] if fit_lr_final is None else float(fit_lr_final)
        self.fit_lr_decay = defaults["lr_decay"] if fit_lr_decay is None else float(fit_lr_decay)
        self.fit_betas = [float(b) for b in (defaults["betas"] if fit_betas is None else fit_betas)]
        self.fit_lr_warmup = fit_lr_warmup  # None: FitConfig's rule (warm-up after the learned init only)
        # weights of the learned init (None: the shipped file); the identity of the ones the saved processor
        # fitted with is written by to_dict and checked on loading
        self.fit_init_weights = None if fit_init_weights is None else str(fit_init_weights)
        self.canvas, self.resize, self.tower_input, self.image_size = canvas, resize, tower_input, image_size
        self.fit_config()  # validates
        if tower_input == "rgb":
            self.model_input_names = ["pixel_values"]
        now = self.init_weights_id()
        if fit_init_weights_id and now and now != fit_init_weights_id:
            logger.warning(
                "GaussianProcessor: it was saved fitting photos from learned-init weights %s, but %s now holds "
                "%s (updated or replaced): photos fitted on the fly start from other weights than when it was "
                "saved. Set fit_init_weights to the file with id %s (gs_encoder.fitting.learned_init.weights_id) "
                "to fit as before.",
                fit_init_weights_id,
                self.fit_init_weights or "the shipped file",
                now,
                fit_init_weights_id,
            )

    def _lr(self) -> list[float]:
        try:
            if isinstance(self.fit_lr, (list, tuple)) and len(self.fit_lr) == 3:
                return [float(x) for x in self.fit_lr]
        except (TypeError, ValueError):
            pass
        raise ValueError(
            f"fit_lr must be 3 step sizes (centres, Cholesky factors, colours), got {self.fit_lr!r}"
        )

    def init_weights_id(self) -> str | None:
        """Identity of the learned-init weights this processor fits from; None when it does not use them."""
        from gs_encoder.fitting.learned_init import weights_id

        if self.tower_input != "gs" or self.fit_config().init != "learned":
            return None
        return weights_id(self.fit_init_weights)

    def to_dict(self) -> dict:
        """As BaseImageProcessor.to_dict, with the init and warm-up resolved (so a reloaded processor fits as
        this one did, whatever the defaults later) and the identity of the learned-init weights fitted from."""
        d = super().to_dict()
        if self.tower_input == "gs":
            cfg = self.fit_config()
            d["fit_lr_warmup"], d["fit_init"] = cfg.warmup_iters, cfg.init
        d.pop("fit_init_weights_id", None)
        weights = self.init_weights_id()
        if weights:
            d["fit_init_weights_id"] = weights
        saved_as = d.pop("_weights_saved_as", None)  # set by LlavaGSProcessor.save_pretrained
        if saved_as:
            d["fit_init_weights"] = saved_as
        return d

    @classmethod
    def from_dict(cls, image_processor_dict: dict, **kwargs):
        """As BaseImageProcessor.from_dict; a config saved before a setting of the fitting optimiser was
        recorded gets its value of LEGACY_FIT_OPTIMISER (what its model's splats were fitted with), one without a
        fit_init gets LEGACY_FIT_INIT, and it says so."""
        d = dict(image_processor_dict)
        folder, own = _LOADING_FROM.get(), d.get("fit_init_weights")
        if folder is not None and own and not Path(own).is_absolute():
            if (folder / own).is_file():
                d["fit_init_weights"] = str(folder / own)  # weights saved with the processor
            elif not Path(own).is_file():
                raise ValueError(
                    f"{folder / own}: this processor fits photos from its own learned-init weights "
                    f"(fit_init_weights = {own!r}), which are missing from {folder}; copy the file back (the "
                    "model was trained on splats fitted from them), or set fit_init_weights in its "
                    "processor_config.json to other weights"
                )
        missing = {k: v for k, v in LEGACY_FIT_OPTIMISER.items() if k not in d and k not in kwargs}
        if d.get("fit_init") is None and kwargs.get("fit_init") is None:
            missing["fit_init"] = LEGACY_FIT_INIT
        if d.get("tower_input", "gs") == "gs" and missing:
            d.update(missing)
            logger.warning(
                "GaussianProcessor: this processor config predates the recorded fitting settings; fitting "
                "with the one of its day (%s). Set them in the config (or pass them) to change it.",
                ", ".join(f"{k}={v}" for k, v in missing.items()),
            )
        return super().from_dict(d, **kwargs)

    def update(self, **settings) -> None:
        """Set the given fitting settings (None leaves one as it is) and check they form a valid fit."""
        for name, value in settings.items():
            if name not in FITTING_SETTINGS:
                raise ValueError(f"unknown image-processor setting {name!r}")
            if value is not None:
                setattr(self, name, [float(b) for b in value] if name in ("fit_betas", "fit_lr") else value)
        self.fit_config()

    def fit_config(self, **overrides) -> FitConfig:
        """The FitConfig of on-the-fly fitting; fit_init None means FitConfig's default init."""
        init = {} if self.fit_init is None else {"init": self.fit_init}
        return FitConfig(
            **{
                "num_gaussians": self.num_gaussians,
                "iters": self.fit_iters,
                "target_psnr": None,
                "init_weights": self.fit_init_weights,
                **dict(zip(("lr_xy", "lr_chol", "lr_rgb"), self._lr(), strict=True)),
                "lr_final": self.fit_lr_final,
                "lr_decay": self.fit_lr_decay,
                "betas": tuple(self.fit_betas),
                "lr_warmup": self.fit_lr_warmup,
                **init,
                **overrides,
            }
        )

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

    def fit(self, canvases: torch.Tensor, progress: bool = False, **overrides) -> list[torch.Tensor]:
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
            fitted = iter(self.fit(torch.stack(photos), progress=progress))
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
        """As ProcessorMixin.from_pretrained; a relative fit_init_weights names a file of the folder (WEIGHTS_FILE,
        written by save_pretrained)."""
        folder = Path(pretrained_model_name_or_path)
        token = _LOADING_FROM.set(folder if folder.is_dir() else None)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        finally:
            _LOADING_FROM.reset(token)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """As ProcessorMixin.save_pretrained; learned-init weights of the image processor's own
        (fit_init_weights) are copied beside the config as WEIGHTS_FILE and recorded by that name, so the
        folder fits photos as this processor does wherever it goes."""
        ip = self.image_processor
        own = getattr(ip, "fit_init_weights", None)
        if not own:
            return super().save_pretrained(save_directory, *args, **kwargs)
        dest = Path(save_directory) / WEIGHTS_FILE
        dest.parent.mkdir(parents=True, exist_ok=True)
        if Path(own).resolve() != dest.resolve():
            tmp = dest.with_name(dest.name + ".tmp")
            shutil.copyfile(own, tmp)
            tmp.replace(dest)
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
