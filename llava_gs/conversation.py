"""Conversation templates (LLaVA-1.5's `plain` and `vicuna_v1`) and the one function that turns a dialogue
into (input_ids, labels) with everything but the assistant replies masked.

Tokenisation is done segment by segment (prompt parts and reply parts separately), so the label mask is
exact by construction: no "tokenization mismatch" between a whole-string tokenisation and per-turn
lengths, the failure that silently trained original LLaVA runs on masked-out samples.
Each `<image>` in a human turn becomes `num_image_tokens` copies of the image token (docs/encoder.md, GS-LLaVA);
a sample whose `<image>` count differs from its number of images raises, naming the sample.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_TOKEN",
    "TEMPLATES",
    "Template",
    "get_template",
    "image_token_id",
    "tokenize_conversation",
]

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class Template:
    """How a dialogue is laid out as text."""

    name: str
    system: str  # text before the first turn ("" for none)
    roles: tuple[str, str]  # (human, assistant) prefixes
    sep: str  # after a human turn and after the system text
    sep2: str  # after an assistant reply (vicuna_v1: the end-of-sequence text)


TEMPLATES = {
    # pretraining: "<image>" then the caption; the human text is dropped, as LLaVA's preprocess_plain does
    "plain": Template("plain", system="", roles=("", ""), sep="", sep2="\n"),
    "vicuna_v1": Template(
        "vicuna_v1",
        system="A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions.",
        roles=("USER", "ASSISTANT"),
        sep=" ",
        sep2="</s>",
    ),
}


def get_template(name: str) -> Template:
    """The template called `name`; raises ValueError listing the valid names (never a silent default)."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown conversation template {name!r}; valid: {', '.join(sorted(TEMPLATES))}")
    return TEMPLATES[name]


def image_token_id(tokenizer) -> int:
    """The id of `<image>` in `tokenizer`; raises ValueError when it is not a token of its own."""
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_id is None or image_id == tokenizer.unk_token_id:
        raise ValueError(
            f"the tokenizer has no {IMAGE_TOKEN!r} token; add it with llava_gs.tokenizer.add_image_token"
        )
    return image_id


def _segments(
    conversations: list[dict], template: Template, sample_id: str, generation: bool = False
) -> list[tuple[str, bool]]:
    """[(text, is_target)] in order; raises on a malformed dialogue.

    With `generation`, the dialogue ends with a human turn and the segments end with the assistant's
    prefix (the prompt a model continues)."""
    if not conversations or len(conversations) % 2 != int(generation):
        want = (
            "an odd number of turns ending with a human one" if generation else "alternating human/gpt turns"
        )
        raise ValueError(f"sample {sample_id}: expected {want}, got {len(conversations)} turns")
    for k, turn in enumerate(conversations):
        want = ("human", "gpt")[k % 2]
        if turn.get("from") != want or not isinstance(turn.get("value"), str):
            raise ValueError(
                f"sample {sample_id}: turn {k} should be from {want!r} with a text value, got {turn!r}"
            )
    if template.name == "plain":
        human = conversations[0]["value"]
        prefix = IMAGE_TOKEN if IMAGE_TOKEN in human else ""
        if generation:
            return [(prefix, False)]
        return [(prefix, False), (conversations[1]["value"] + template.sep2, True)]
    out = [(template.system + template.sep if template.system else "", False)]
    for k in range(0, len(conversations), 2):
        human = conversations[k]["value"]
        out.append((f"{template.roles[0]}: {human}{template.sep}{template.roles[1]}:", False))
        if k + 1 < len(conversations):
            out.append((" " + conversations[k + 1]["value"] + template.sep2, True))
    return out


def tokenize_conversation(
    conversations: list[dict],
    tokenizer,
    template: Template | str,
    num_images: int,
    num_image_tokens: int,
    max_length: int | None = None,
    sample_id: str = "?",
    add_generation_prompt: bool = False,
) -> tuple[list[int], list[int]]:
    """Dialogue → (input_ids, labels); labels are IGNORE_INDEX except on assistant replies.

    Args:
        conversations: LLaVA-1.5 turns [{"from": "human"|"gpt", "value": str}, ...].
        tokenizer: a transformers tokenizer holding `<image>` as a special token.
        template: a Template or its name.
        num_images: images this sample carries; must equal its `<image>` count.
        num_image_tokens: K tokens each `<image>` becomes.
        max_length: longest allowed sequence; a longer sample is truncated with a warning naming it,
            and raises when truncating would cut an image's tokens or every target.
        add_generation_prompt: the dialogue ends with a human turn; the ids end with the assistant's
            prefix, ready for `generate` (the chat CLI and lmms-eval use this, so inference prompts are
            built by the same code as training ones).
    Raises:
        ValueError naming the sample on a malformed dialogue, an `<image>` count mismatch or an
        over-long sample that cannot be truncated.
    """
    template = get_template(template) if isinstance(template, str) else template
    image_id = image_token_id(tokenizer)
    segments = _segments(conversations, template, sample_id, add_generation_prompt)
    found = sum(text.count(IMAGE_TOKEN) for text, _ in segments)
    if found != num_images:
        raise ValueError(
            f"sample {sample_id}: {found} {IMAGE_TOKEN} token(s) in the text but {num_images} image(s)"
        )
    ids: list[int] = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    labels: list[int] = [IGNORE_INDEX] * len(ids)
    for text, is_target in segments:
        pieces = text.split(IMAGE_TOKEN)
        for k, piece in enumerate(pieces):
            if k:
                ids += [image_id] * num_image_tokens
                labels += [IGNORE_INDEX] * num_image_tokens
            if piece:
                tok = tokenizer(piece, add_special_tokens=False)["input_ids"]
                ids += tok
                labels += tok if is_target else [IGNORE_INDEX] * len(tok)
    if max_length is not None and len(ids) > max_length:
        ids, labels = _truncate(ids, labels, max_length, image_id, sample_id)
    return ids, labels


def _truncate(ids: list[int], labels: list[int], max_length: int, image_id: int, sample_id: str):
    """The first max_length tokens, with a warning naming the sample (LLaVA truncates silently); an
    error when that would cut an image's tokens or leave no answer token to learn from."""
    kept = sum(x != IGNORE_INDEX for x in labels[:max_length])
    total = sum(x != IGNORE_INDEX for x in labels)
    cut_image = image_id in ids[max_length:]
    if cut_image or kept == 0:
        what = "an image's tokens" if cut_image else "every answer token"
        raise ValueError(
            f"sample {sample_id}: {len(ids)} tokens exceed max_length {max_length} and truncating would cut "
            f"{what}; raise --model_max_length or shorten the sample"
        )
    logger.warning(
        "sample %s: %d tokens exceed max_length %d; truncated, %d of its %d answer tokens kept",
        sample_id,
        len(ids),
        max_length,
        kept,
        total,
    )
    return ids[:max_length], labels[:max_length]
