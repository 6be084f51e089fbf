"""Templates and the masking tokenisation, with a tiny tokenizer trained offline."""

import pytest

from llava_gs.conversation import IGNORE_INDEX, get_template, tokenize_conversation

K = 5


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
    return tiny_tokenizer


def decode_targets(tok, ids, labels):
    return tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX])


def test_vicuna_masks_all_but_replies(tokenizer):
    conv = [
        {"from": "human", "value": "<image>\nWhat is in the image?"},
        {"from": "gpt", "value": "A cat."},
        {"from": "human", "value": "What colour?"},
        {"from": "gpt", "value": "Orange."},
    ]
    ids, labels = tokenize_conversation(conv, tokenizer, "vicuna_v1", num_images=1, num_image_tokens=K)
    assert len(ids) == len(labels)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert ids.count(image_id) == K and ids[0] == tokenizer.bos_token_id
    assert all(labels[i] == IGNORE_INDEX for i, t in enumerate(ids) if t == image_id)
    assert decode_targets(tokenizer, ids, labels) == " A cat.</s> Orange.</s>"
    text = tokenizer.decode(ids)
    assert text.startswith("<s>A chat between") and "USER: " in text and "ASSISTANT: Orange.</s>" in text


def test_plain_keeps_only_the_caption(tokenizer):
    conv = [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "a red sofa"}]
    ids, labels = tokenize_conversation(conv, tokenizer, "plain", num_images=1, num_image_tokens=K)
    assert decode_targets(tokenizer, ids, labels) == "a red sofa\n"
    assert ids[1 : 1 + K] == [tokenizer.convert_tokens_to_ids("<image>")] * K


def test_errors_name_the_sample(tokenizer):
    conv = [{"from": "human", "value": "no image here"}, {"from": "gpt", "value": "ok"}]
    with pytest.raises(ValueError, match=r"sample 42: 0 <image> token\(s\) in the text but 1 image"):
        tokenize_conversation(conv, tokenizer, "vicuna_v1", num_images=1, num_image_tokens=K, sample_id="42")
    with pytest.raises(ValueError, match="sample 7: turn 1"):
        tokenize_conversation([conv[0], conv[0]], tokenizer, "vicuna_v1", 0, K, sample_id="7")
    with pytest.raises(
        ValueError, match="sample 9: .* exceed max_length 5 and truncating would cut every answer"
    ):
        tokenize_conversation(conv, tokenizer, "vicuna_v1", 0, K, max_length=5, sample_id="9")
    with pytest.raises(ValueError, match="unknown conversation template 'llama_2'; valid: plain, vicuna_v1"):
        get_template("llama_2")


def test_a_sample_longer_than_the_context_is_truncated_with_a_warning(tokenizer, caplog):
    long = "a red sofa " * 200
    conv = [
        {"from": "human", "value": "<image>\nDescribe."},
        {"from": "gpt", "value": "A cat."},
        {"from": "human", "value": "More?"},
        {"from": "gpt", "value": long},
    ]
    full, full_labels = tokenize_conversation(conv, tokenizer, "vicuna_v1", 1, K)
    limit = len(full) - 100
    with caplog.at_level("WARNING", logger="llava_gs.conversation"):
        ids, labels = tokenize_conversation(
            conv, tokenizer, "vicuna_v1", 1, K, max_length=limit, sample_id="s7"
        )
    assert ids == full[:limit] and labels == full_labels[:limit]
    kept = sum(x != -100 for x in labels)
    assert kept > 0  # still something to learn from: never a silent loss of 0
    assert f"sample s7: {len(full)} tokens exceed max_length {limit}; truncated, {kept} of its" in caplog.text
    # a limit inside the image's tokens is an error naming the sample and the fix
    with pytest.raises(
        ValueError, match=r"sample s8: .* would cut an image's tokens; raise --model_max_length"
    ):
        tokenize_conversation(conv, tokenizer, "vicuna_v1", 1, K, max_length=K // 2, sample_id="s8")
