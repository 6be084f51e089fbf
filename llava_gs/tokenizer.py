"""Tokenizer helpers: the `<image>` token as LLaVA-1.5 / llava-hf use it, and small offline tokenizers.

`add_image_token` is what `build_init_checkpoint.py` and `train.py` do to a Vicuna tokenizer: `<image>`
becomes a special token (id 32000 for Vicuna) and the pad token is `<unk>` when there is none (LLaVA v1).
`train_bpe_tokenizer` builds a byte-level BPE tokenizer from texts, for tests and the miniature
reproduction (no tokenizer can be downloaded on machines without hub access).
"""

from __future__ import annotations

from collections.abc import Iterable

from .conversation import IMAGE_TOKEN

__all__ = ["add_image_token", "train_bpe_tokenizer"]


def add_image_token(tokenizer) -> int:
    """Add `<image>` as a special token if absent and give the tokenizer a pad token; returns its id."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        if tokenizer.unk_token is None:
            raise ValueError(
                "the tokenizer has neither a pad nor an unk token; set tokenizer.pad_token first"
            )
        tokenizer.pad_token = tokenizer.unk_token
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 1000):
    """A byte-level BPE `PreTrainedTokenizerFast` with `<unk> <s> </s> <image>` (ids 0–3), BOS added.

    Trains in well under a second on a few MB of text. Round trips any UTF-8 text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", IMAGE_TOKEN]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        additional_special_tokens=[IMAGE_TOKEN],
        padding_side="right",
    )
