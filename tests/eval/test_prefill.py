"""The prefill benchmark measures what it claims: the KV cache grows exactly with the prompt."""

import argparse

from eval.bench.prefill import TEXT_TOKENS, _one


def test_kv_cache_scales_with_visual_tokens():
    args = argparse.Namespace(
        model=None, layers=1, hidden=128, batch=1, reps=1, device="cpu", dtype="float32"
    )
    small, large = _one(98, args), _one(196, args)
    assert small["prompt_tokens"] == TEXT_TOKENS + 98 and large["prompt_tokens"] == TEXT_TOKENS + 196
    # keys + values, 1 layer, 1 head of 128, fp32: 2 · L · 128 · 4 bytes
    assert small["kv_cache_mib"] * 2**20 == 2 * (TEXT_TOKENS + 98) * 128 * 4
    assert large["prefill_s"] > 0 and small["prefill_s"] > 0
