"""The HF Trainer with LLaVA-1.5's additions: a projector learning rate and the modality-grouped sampler.

Written against transformers 5.x's public hooks (`create_optimizer(model=None)`,
`_get_train_sampler(train_dataset=None)`), not LLaVA's overrides of private saving methods.
"""

from __future__ import annotations

import torch
from transformers import Trainer, TrainerCallback

__all__ = ["LlavaGSTrainer", "NoFinalCheckpoint", "modality_grouped_indices"]


def _chunks(seq: list[int], size: int) -> list[list[int]]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]


def modality_grouped_indices(
    lengths: list[int], batch_size: int, world_size: int, generator: torch.Generator | None = None
) -> list[int]:
    """A permutation where every global batch holds only multimodal (length > 0) or only text-only
    (length < 0) samples, sorted by length inside mega-batches, as LLaVA's `group_by_modality_length`.

    Mega-batches of `batch_size * world_size` samples of one modality are shuffled together; the last,
    possibly mixed, remainder batch goes last.
    """
    if any(n == 0 for n in lengths):
        raise ValueError("modality lengths must be non-zero (positive: with image, negative: text only)")
    mega = batch_size * world_size
    groups = []
    for sign in (1, -1):
        idx = [i for i, n in enumerate(lengths) if (n > 0) == (sign > 0)]
        if not idx:
            continue
        perm = torch.randperm(len(idx), generator=generator).tolist()
        shuffled = [idx[p] for p in perm]
        for chunk in _chunks(shuffled, mega):
            groups.append(sorted(chunk, key=lambda i: -abs(lengths[i])))
    full = [g for g in groups if len(g) == mega]
    rest = [i for g in groups if len(g) < mega for i in g]
    order = torch.randperm(len(full), generator=generator).tolist()
    return [i for o in order for i in full[o]] + rest


class _ListSampler(torch.utils.data.Sampler):
    def __init__(self, lengths, batch_size, world_size, seed):
        self.lengths, self.batch_size, self.world_size, self.seed = lengths, batch_size, world_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(modality_grouped_indices(self.lengths, self.batch_size, self.world_size, g))


class LlavaGSTrainer(Trainer):
    """Trainer + `mm_projector_lr` (a separate learning rate for the projector) + modality grouping.

    Extra arguments come from `LlavaGSTrainingArguments`: `mm_projector_lr`, `group_by_modality_length`.
    """

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if getattr(self.args, "group_by_modality_length", False) and hasattr(dataset, "modality_lengths"):
            return _ListSampler(
                dataset.modality_lengths,
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                self.args.world_size,
                self.args.seed,
            )
        return super()._get_train_sampler(train_dataset)

    def create_optimizer(self, model=None):
        lr = getattr(self.args, "mm_projector_lr", None)
        if self.optimizer is not None or lr is None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[bool, bool], list] = {}
        for name, p in opt_model.named_parameters():
            if p.requires_grad:
                groups.setdefault(("multi_modal_projector" in name, name in decay), []).append(p)
        param_groups = []
        for (is_proj, has_decay), params in sorted(groups.items()):
            group = {"params": params, "weight_decay": self.args.weight_decay if has_decay else 0.0}
            if is_proj:
                group["lr"] = lr
            param_groups.append(group)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer


class NoFinalCheckpoint(TrainerCallback):
    """Skip the checkpoint transformers 5 writes after the last step (model + optimizer state: ~100 GB for a
    7B model under ZeRO-3): train.py saves the final weights right after, as LLaVA does. Checkpoints at
    `save_steps` multiples are kept."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps and (
            state.save_steps <= 0 or state.global_step % state.save_steps
        ):
            control.should_save = False
        return control
