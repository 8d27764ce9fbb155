"""Vectorised, seeded, stratified selection: class filter, per-class subsets, held-out (val/test) splits.

Everything works on label tensors with torch ops (a random permutation, a stable sort by class, a rank within
class); there is no per-sample Python loop.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from bench.config import SpecError


def class_counts(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.bincount(y, minlength=num_classes)[:num_classes]


def rank_within_class(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """For each example, its position within its class in a uniformly random order (0..n_c-1)."""
    n = y.shape[0]
    perm = torch.randperm(n, generator=generator)
    order = perm[torch.argsort(y[perm], stable=True)]  # grouped by class, random within each class
    counts = class_counts(y, num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.int64)
    rank[order] = torch.arange(n) - starts[y[order]]
    return rank


def take_per_class(y: torch.Tensor, num_classes: int, k: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Bool mask choosing exactly min(k[c], n_c) random examples of each class c."""
    if y.numel() == 0:
        return torch.zeros(0, dtype=torch.bool)
    return rank_within_class(y, num_classes, generator) < k[y]


def fraction_counts(counts: torch.Tensor, fraction: float) -> torch.Tensor:
    """round(fraction * n_c) per class (halves up)."""
    return torch.floor(counts.double() * fraction + 0.5).long()


def stratified_holdout(y: torch.Tensor, num_classes: int, fraction: float,
                       generator: torch.Generator) -> torch.Tensor:
    """Bool mask of the held-out part: round(fraction * n_c) random examples of every class c."""
    return take_per_class(y, num_classes, fraction_counts(class_counts(y, num_classes), fraction), generator)


def per_class_counts(value: Union[int, float], counts: torch.Tensor, field: str,
                     classes: Optional[Sequence[str]] = None) -> torch.Tensor:
    """How many of each class `dataset.<field>` keeps: int >= 1 exact count (error if a class has fewer),
    float in (0, 1] a fraction (round(f * n_c), at least 1 for a non-empty class)."""
    allowed = "an integer >= 1 (examples per class) or a fraction in (0, 1]"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(field, value, allowed)
    if isinstance(value, int):
        if value < 1:
            raise SpecError(field, value, allowed)
        present = counts > 0
        if not bool(present.any()):
            raise SpecError(field, value, "a split with examples (this one is empty)")
        smallest = int(torch.argmin(torch.where(present, counts, counts.max() + 1)))
        avail = int(counts[smallest])
        if value > avail:
            name = classes[smallest] if classes is not None and smallest < len(classes) else str(smallest)
            raise SpecError(field, value, f"at most {avail} (class {smallest} {name!r} has only {avail} examples)")
        return torch.where(present, torch.full_like(counts, value), counts)
    if not (0.0 < value <= 1.0):
        raise SpecError(field, value, allowed)
    k = fraction_counts(counts, value)
    return torch.where(counts > 0, k.clamp(min=1), k)


def filter_classes(y: torch.Tensor, keep: Sequence[int], num_classes: int,
                   field: str = "dataset.classes") -> tuple[torch.Tensor, torch.Tensor]:
    """(row mask, new labels of the kept rows): classes `keep` relabelled 0..k-1 in the given order."""
    allowed = f"a non-empty list of distinct class indices in 0..{num_classes - 1}"
    if isinstance(keep, (str, bytes)) or not isinstance(keep, Sequence) or len(keep) == 0:
        raise SpecError(field, keep, allowed)
    for i, c in enumerate(keep):
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_classes:
            raise SpecError(f"{field}[{i}]", c, allowed)
    if len(set(keep)) != len(keep):
        raise SpecError(field, list(keep), allowed + " (duplicates given)")
    lut = torch.full((num_classes,), -1, dtype=torch.int64)
    lut[torch.as_tensor(list(keep), dtype=torch.int64)] = torch.arange(len(keep))
    new = lut[y]
    mask = new >= 0
    return mask, new[mask]


def validate_fraction(value: float, field: str, *, lo_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            (0.0 < value if lo_open else 0.0 <= value) and value < 1.0):
        raise SpecError(field, value, f"a number in {'(' if lo_open else '['}0, 1)")
    return float(value)
