"""Label noise on the training split (after the val split; val and test labels stay clean).

symmetric:  exactly round(rate * N) examples, chosen uniformly at random, get a label drawn uniformly from the
            OTHER classes (so every chosen label really changes; realised rate == round(rate*N)/N).
asymmetric: class-dependent flips (Patrini et al. 2017 convention). For each *source* class c, exactly
            round(rate * n_c) of its examples are chosen at random and relabelled target[c]; other classes are
            untouched, so the realised rate over the whole train split is below `rate` for CIFAR-10
            (5 of 10 classes are sources: about rate/2).
            - CIFAR-10 names: truck->automobile, bird->airplane, deer->horse, cat->dog, dog->cat.
            - sets with superclasses (CIFAR-100): each class -> the next class of its superclass, cyclically
              (order = class index among the classes kept by `dataset.classes`).
            A dataset with neither (or a class filter leaving no pair) is a SpecError on dataset.noise.kind.
Seeded by the "noise" stream of the data seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from bench.config import NoiseConfig, SpecError
from bench.data.splits import class_counts, fraction_counts, take_per_class
from bench.seeding import generator

CIFAR10_ASYMMETRIC = {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"}


@dataclass
class NoisyLabels:
    y: torch.Tensor          # int64 [N] noisy labels
    mask: torch.Tensor       # bool [N]: y != clean label
    realised_rate: float     # mask.mean() over the whole train split


def _result(clean: torch.Tensor, noisy: torch.Tensor) -> NoisyLabels:
    mask = noisy != clean
    return NoisyLabels(noisy, mask, int(mask.sum()) / mask.numel() if mask.numel() else 0.0)


def asymmetric_targets(classes: Sequence[str], fine_to_coarse: Optional[Sequence[int]] = None) -> Optional[torch.Tensor]:
    """target[k] for each class (== k when unchanged), or None when the dataset has no asymmetric mapping
    (no superclasses and no CIFAR-10 pair among the class names)."""
    k = len(classes)
    target = torch.arange(k)
    if fine_to_coarse is not None:
        coarse = torch.as_tensor(list(fine_to_coarse), dtype=torch.int64)
        for sup in torch.unique(coarse[coarse >= 0]).tolist():  # loop over superclasses, not samples
            members = torch.nonzero(coarse == sup).flatten()
            target[members] = torch.roll(members, -1)
    else:
        index = {name: i for i, name in enumerate(classes)}
        for src, dst in CIFAR10_ASYMMETRIC.items():
            if src in index and dst in index:
                target[index[src]] = index[dst]
    if bool((target == torch.arange(k)).all()):
        return None
    return target


def symmetric_noise(y: torch.Tensor, num_classes: int, rate: float, g: torch.Generator) -> NoisyLabels:
    """Exactly round(rate * N) random examples get a uniformly random *different* label."""
    n = y.shape[0]
    n_flip = int(n * rate + 0.5)
    noisy = y.clone()
    if n_flip and num_classes > 1:
        idx = torch.randperm(n, generator=g)[:n_flip]
        offset = torch.randint(1, num_classes, (n_flip,), generator=g)
        noisy[idx] = (y[idx] + offset) % num_classes
    return _result(y, noisy)


def asymmetric_noise(y: torch.Tensor, target: torch.Tensor, rate: float, g: torch.Generator) -> NoisyLabels:
    """For each source class c (target[c] != c), exactly round(rate * n_c) random examples become target[c]."""
    k = target.shape[0]
    is_source = target != torch.arange(k)
    quota = torch.where(is_source, fraction_counts(class_counts(y, k), rate), torch.zeros(k, dtype=torch.int64))
    chosen = take_per_class(y, k, quota, g)
    noisy = torch.where(chosen, target[y], y)
    return _result(y, noisy)


def apply_noise(y: torch.Tensor, cfg: NoiseConfig, classes: Sequence[str], seed: int,
                fine_to_coarse: Optional[Sequence[int]] = None, dataset: str = "") -> NoisyLabels:
    """Noisy train labels for `cfg` (kind none|symmetric|asymmetric), seeded by the data seed's "noise" stream."""
    kinds = ("none", "symmetric", "asymmetric")
    if cfg.kind not in kinds:
        raise SpecError("dataset.noise.kind", cfg.kind, "one of " + ", ".join(map(repr, kinds)))
    rate = cfg.rate
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise SpecError("dataset.noise.rate", rate, "a number in [0.0, 1.0)")
    if cfg.kind == "none":
        if rate:
            raise SpecError("dataset.noise.rate", rate, "0.0 when dataset.noise.kind is 'none' "
                                                        "(or set kind: symmetric / asymmetric)")
        return _result(y, y.clone())
    g = generator(seed, "noise")
    if cfg.kind == "symmetric":
        if len(classes) < 2 and rate > 0:
            raise SpecError("dataset.noise.kind", cfg.kind, "'none' (symmetric noise needs at least 2 classes)")
        return symmetric_noise(y, len(classes), rate, g)
    target = asymmetric_targets(classes, fine_to_coarse)
    if target is None:
        raise SpecError("dataset.noise.kind", cfg.kind,
                        f"'none' or 'symmetric': {dataset or 'this dataset'} has no asymmetric mapping "
                        f"(defined for CIFAR-10 class names truck/bird/deer/cat/dog and for sets with "
                        f"superclasses such as CIFAR-100; a class filter may have removed every pair)")
    return asymmetric_noise(y, target, rate, g)
