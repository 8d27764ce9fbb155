"""Label noise: exact counts, only-other-class flips, the asymmetric pairs, determinism, errors."""
from __future__ import annotations

import pytest
import torch

from bench.config import DataConfig, NoiseConfig, SpecError
from bench.data import load_splits
from bench.data.noise import CIFAR10_ASYMMETRIC, apply_noise, asymmetric_targets
from bench.data.sources import CIFAR10_CLASSES


def _labels(n: int = 5000, k: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))


def test_symmetric_rate_is_exact_and_never_keeps_the_clean_label():
    y = _labels()
    out = apply_noise(y, NoiseConfig("symmetric", 0.4), [str(i) for i in range(10)], seed=0)
    assert abs(out.realised_rate - 0.4) <= 0.02 and int(out.mask.sum()) == 2000
    assert bool((out.y[out.mask] != y[out.mask]).all()) and torch.equal(out.y[~out.mask], y[~out.mask])
    assert torch.equal(out.mask, out.y != y)
    # the new label is uniform over the other 9 classes: each offset gets ~2000/9 = 222
    offsets = torch.bincount((out.y[out.mask] - y[out.mask]) % 10, minlength=10)
    assert offsets[0] == 0 and int(offsets[1:].min()) > 150 and int(offsets[1:].max()) < 300


def test_asymmetric_cifar10_maps_exactly_the_stated_pairs():
    y = _labels()
    out = apply_noise(y, NoiseConfig("asymmetric", 0.4), CIFAR10_CLASSES, seed=0)
    idx = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    allowed = {(idx[s], idx[d]) for s, d in CIFAR10_ASYMMETRIC.items()}
    assert allowed == {(9, 1), (2, 0), (4, 7), (3, 5), (5, 3)}
    pairs = set(zip(y[out.mask].tolist(), out.y[out.mask].tolist()))
    assert pairs == allowed
    for c in range(10):  # rate is per source class: exactly round(0.4 * n_c) of each source class flip
        n_c = int((y == c).sum())
        flipped = int(out.mask[y == c].sum())
        assert flipped == (int(n_c * 0.4 + 0.5) if c in {9, 2, 4, 3, 5} else 0)
    assert abs(out.realised_rate - 0.2) < 0.02  # half the classes are sources


def test_asymmetric_cifar100_goes_to_next_class_in_superclass_cyclically():
    f2c = [1, 0, 1, 0, 2, 1]  # superclass 1 = {0, 2, 5}, 0 = {1, 3}, 2 = {4} (alone: unchanged)
    target = asymmetric_targets([f"c{i}" for i in range(6)], f2c)
    assert target.tolist() == [2, 3, 5, 1, 4, 0]
    y = _labels(3000, 6)
    out = apply_noise(y, NoiseConfig("asymmetric", 0.3), [f"c{i}" for i in range(6)], seed=1, fine_to_coarse=f2c)
    assert bool((out.y[out.mask] == target[y[out.mask]]).all())
    assert int(out.mask[y == 4].sum()) == 0 and int(out.mask[y == 0].sum()) == int(int((y == 0).sum()) * 0.3 + 0.5)


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
def test_same_seed_same_mask_different_seed_different(kind):
    y = _labels()
    cfg = NoiseConfig(kind, 0.3)
    a = apply_noise(y, cfg, CIFAR10_CLASSES, seed=5)
    b = apply_noise(y, cfg, CIFAR10_CLASSES, seed=5)
    c = apply_noise(y, cfg, CIFAR10_CLASSES, seed=6)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.y, b.y)
    assert not torch.equal(a.mask, c.mask)


def test_asymmetric_without_mapping_is_spec_error_on_kind(cache_dir):
    with pytest.raises(SpecError) as e:
        load_splits(DataConfig(name="digits", noise=NoiseConfig("asymmetric", 0.2)), cache_dir=cache_dir)
    assert e.value.path == "dataset.noise.kind" and "asymmetric" in str(e.value)
    # a class filter that removes every pair: also an error, not silently zero noise
    with pytest.raises(SpecError, match="dataset.noise.kind"):
        apply_noise(_labels(100, 2), NoiseConfig("asymmetric", 0.2), ["airplane", "ship"], seed=0)


def test_rate_with_kind_none_is_spec_error():
    with pytest.raises(SpecError) as e:
        apply_noise(_labels(10), NoiseConfig("none", 0.2), CIFAR10_CLASSES, seed=0)
    assert e.value.path == "dataset.noise.rate"


def test_noise_touches_train_only_and_val_test_stay_clean(cache_dir):
    base = DataConfig(name="digits", val_fraction=0.2)
    clean = load_splits(base, cache_dir=cache_dir)
    noisy = load_splits(DataConfig(name="digits", val_fraction=0.2, noise=NoiseConfig("symmetric", 0.5)),
                        cache_dir=cache_dir)
    assert torch.equal(noisy.val.y, clean.val.y) and torch.equal(noisy.test.y, clean.test.y)
    assert torch.equal(noisy.val.x, clean.val.x) and torch.equal(noisy.train.x, clean.train.x)
    assert torch.equal(noisy.clean_train_y, clean.train.y)
    assert noisy.noise_mask.dtype == torch.bool and noisy.noise_mask.shape == noisy.train.y.shape
    assert torch.equal(noisy.noise_mask, noisy.train.y != noisy.clean_train_y)
    n = len(noisy.train)
    assert noisy.meta["realised_rate"] == int(n * 0.5 + 0.5) / n and noisy.meta["noise_kind"] == "symmetric"
    assert clean.meta["realised_rate"] == 0.0 and not bool(clean.noise_mask.any())
