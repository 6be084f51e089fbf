"""Loading splat shards into padded batches."""

import io
import json

import numpy as np
import pytest
import torch

from gs_encoder.data import UpsampledSampler, collate_splats, splat_loader

from .test_shards import make_shards, make_tar


def npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def splats(n, seed):
    rng = np.random.default_rng(seed)
    a = rng.random((n, 8)).astype(np.float16)
    a[:, 2:5] = 0.01 + 0.05 * a[:, 2:5]
    return a


def test_batches_pad_and_mask(tmp_path):
    counts = [6, 11, 3, 7, 9]
    samples = [
        (
            f"k{i}",
            {
                "gs.npy": npy(splats(n, i)),
                "txt": f"caption {i}".encode(),
                "json": json.dumps({"i": i}).encode(),
                "t16.npy": npy(np.ones(4, np.float16) * i),
            },
        )
        for i, n in enumerate(counts)
    ]
    make_tar(tmp_path / "a.tar", samples)
    batches = list(splat_loader([tmp_path / "a.tar"], batch_size=2))
    assert [b["splats"].shape[0] for b in batches] == [2, 2, 1]
    b0 = batches[0]
    assert b0["splats"].shape == (2, 11, 8) and b0["mask"].dtype == torch.bool
    assert b0["mask"].sum(1).tolist() == [6, 11]
    assert (b0["splats"][0, 6:] == 0).all()
    torch.testing.assert_close(b0["splats"][1], torch.from_numpy(splats(11, 1).astype(np.float32)))
    assert b0["captions"] == ["caption 0", "caption 1"] and b0["keys"] == ["k0", "k1"]
    torch.testing.assert_close(b0["teacher"], torch.tensor([[0.0] * 4, [1.0] * 4]))


def test_bad_samples_are_skipped_with_a_warning(tmp_path):
    bad_nan = splats(5, 9).astype(np.float32)
    bad_nan[2, 1] = np.nan
    samples = [
        ("good0", {"gs.npy": npy(splats(4, 0))}),
        ("nan", {"gs.npy": npy(bad_nan)}),
        ("shape", {"gs.npy": npy(np.ones((4, 6), np.float16))}),
        ("junk", {"gs.npy": b"not npy at all"}),
        ("nosplat", {"txt": b"only a caption"}),
        ("good1", {"gs.npy": npy(splats(2, 1))}),
    ]
    make_tar(tmp_path / "b.tar", samples)
    with pytest.warns(UserWarning, match="skipped a bad sample") as rec:
        batches = list(splat_loader([tmp_path / "b.tar"], batch_size=8))
    assert len(batches) == 1 and batches[0]["keys"] == ["good0", "good1"]
    assert batches[0]["teacher"] is None
    assert any("nan" in str(w.message) for w in rec) and any("shape" in str(w.message) for w in rec)


def test_reads_fit_shards_output(tmp_path):
    from gs_encoder.fitting.fit import FitConfig
    from gs_encoder.shards import ShardJobConfig, run_shard_job

    make_shards(tmp_path / "in", 2, 3)
    run_shard_job(
        [tmp_path / "in"],
        tmp_path / "out",
        ShardJobConfig(fit=FitConfig(num_gaussians=9, iters=5), size=16),
        progress=False,
    )
    batches = list(splat_loader(sorted((tmp_path / "out").glob("*.tar")), batch_size=4))
    assert sum(b["splats"].shape[0] for b in batches) == 6
    assert all(b["mask"].all() for b in batches) and batches[0]["captions"][0].startswith("photo")


def test_collate_empty_raises():
    with pytest.raises(ValueError):
        collate_splats([])


def test_shuffle_is_a_seeded_permutation(tmp_path):
    make_tar(tmp_path / "c.tar", [(f"k{i:02d}", {"gs.npy": npy(splats(3, i))}) for i in range(20)])

    def keys(seed):
        return [k for b in splat_loader([tmp_path / "c.tar"], 5, shuffle=20, seed=seed) for k in b["keys"]]

    a, b = keys(1), keys(1)
    assert a == b and sorted(a) == [f"k{i:02d}" for i in range(20)] and a != sorted(a)


def test_upsampled_sampler_draws_each_source_at_its_rate():
    # 300 scenes at rate 1, 200 word images at rate 0.25: 350 draws an epoch, about 50 of them words
    sampler = UpsampledSampler([300, 200], [1.0, 0.25], seed=3)
    assert len(sampler) == 350
    epochs = []
    for epoch in range(40):
        sampler.set_epoch(epoch)
        idx = list(sampler)
        assert len(idx) == 350 and 0 <= min(idx) and max(idx) < 500
        epochs.append(idx)
    words = np.mean([sum(i >= 300 for i in idx) for idx in epochs])
    assert abs(words - 50) < 4, words  # expected 350 · 50/350; s.e. of the mean over 40 epochs ≈ 1
    # an epoch's order is a function of (seed, epoch): a resumed run sees the same batches
    again = UpsampledSampler([300, 200], [1.0, 0.25], seed=3)
    again.set_epoch(7)
    assert list(again) == epochs[7] and epochs[7] != epochs[8]


@pytest.mark.parametrize(
    "sizes, factors, msg",
    [([3, 4], [1.0], "1 upsampling factors for 2 data sources"), ([3], [0.0], "finite and > 0")],
)
def test_upsampled_sampler_rejects_bad_factors(sizes, factors, msg):
    with pytest.raises(ValueError, match=msg):
        UpsampledSampler(sizes, factors)
