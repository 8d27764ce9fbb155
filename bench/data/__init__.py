"""Data layer: raw sources (DATASETS), decoded-data cache, splits, label noise, and the `load_splits` entry point.

Order of operations in `load_splits` (each random step has its own stream of the data seed `dataset.seed`):
  1. decode (or read from cache) the raw source;
  2. single-split sources: carve the test split, stratified, `dataset.test_split` (default 0.2)  ["test_split"];
  3. class filter `dataset.classes` (relabelled 0..k-1 in the given order) on train and test;
  4. per-class subsets `train_per_class` ["subset"] / `test_per_class` ["subset_test"];
  5. validation split held out of the (subset) train split, stratified, `val_fraction`  ["val_split"];
  6. label noise on the remaining train split only  ["noise"];
  7. tensors moved to `device`.
`train_per_class` therefore counts the pool *before* the val hold-out (100 per class, val 0.1 -> 90 + 10).
"""
from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from bench.config import DataConfig, parse, to_dict
from bench.data import sources as _sources  # noqa: F401  (registers the sources)
from bench.data.noise import apply_noise
from bench.data.registry import DATASETS, LOADERS, RawData, Source, get_source
from bench.data.splits import (class_counts, filter_classes, per_class_counts, stratified_holdout, take_per_class,
                               validate_fraction)
from bench.data.tensors import ImageData
from bench.ids import canonical_json
from bench.seeding import generator

__all__ = ["DATASETS", "RawData", "Source", "Splits", "load_splits", "load_raw"]

DEFAULT_TEST_SPLIT = 0.2


@dataclass
class Splits:
    train: ImageData
    val: ImageData            # 0 rows when val_fraction == 0
    test: ImageData
    num_classes: int
    in_chans: int
    img_size: int
    clean_train_y: torch.Tensor   # int64 [N_train], labels before noise
    noise_mask: torch.Tensor      # bool [N_train], train.y != clean_train_y
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-ready description


def load_raw(cfg: DataConfig, cache_dir: Optional[Path] = None) -> tuple[RawData, str, Source]:
    """(decoded raw data, source fingerprint, source) for `cfg.name`; unknown names are a SpecError."""
    src = get_source(cfg.name)
    raw, fp = src.load(cfg, cache_dir)
    return raw, fp, src


def load_splits(cfg: DataConfig, *, device: str | torch.device = "cpu", cache_dir: Path | None = None) -> Splits:
    """Train/val/test ImageData for `cfg` (deterministic for a given cfg), moved to `device`."""
    raw, fp, src = load_raw(cfg, cache_dir)
    classes, f2c = list(raw.classes), raw.fine_to_coarse
    k = len(classes)
    seed = cfg.seed

    # 2. test split
    test_split_used: Optional[float] = None
    if raw.single_split:
        test_split_used = DEFAULT_TEST_SPLIT if cfg.test_split is None else \
            validate_fraction(cfg.test_split, "dataset.test_split")
        held = stratified_holdout(raw.y_train, k, test_split_used, generator(seed, "test_split"))
        x_tr, y_tr, x_te, y_te = raw.x_train[~held], raw.y_train[~held], raw.x_train[held], raw.y_train[held]
    else:
        if cfg.test_split is not None:
            warnings.warn(f"dataset.test_split={cfg.test_split} ignored: {cfg.name} has its own test split")
        x_tr, y_tr, x_te, y_te = raw.x_train, raw.y_train, raw.x_test, raw.y_test
    assert x_te is not None and y_te is not None

    # 3. class filter
    if cfg.classes is not None:
        m_tr, y_tr = filter_classes(y_tr, cfg.classes, k)
        m_te, y_te = filter_classes(y_te, cfg.classes, k)
        x_tr, x_te = x_tr[m_tr], x_te[m_te]
        classes = [classes[c] for c in cfg.classes]
        f2c = [f2c[c] for c in cfg.classes] if f2c is not None else None
        k = len(classes)

    # 4. per-class subsets
    if cfg.train_per_class is not None:
        quota = per_class_counts(cfg.train_per_class, class_counts(y_tr, k), "dataset.train_per_class", classes)
        m = take_per_class(y_tr, k, quota, generator(seed, "subset"))
        x_tr, y_tr = x_tr[m], y_tr[m]
    if cfg.test_per_class is not None:
        quota = per_class_counts(cfg.test_per_class, class_counts(y_te, k), "dataset.test_per_class", classes)
        m = take_per_class(y_te, k, quota, generator(seed, "subset_test"))
        x_te, y_te = x_te[m], y_te[m]

    # 5. validation split
    val_fraction = validate_fraction(cfg.val_fraction, "dataset.val_fraction", lo_open=False)
    if val_fraction > 0:
        held = stratified_holdout(y_tr, k, val_fraction, generator(seed, "val_split"))
    else:
        held = torch.zeros_like(y_tr, dtype=torch.bool)
    x_va, y_va, x_tr, y_tr = x_tr[held], y_tr[held], x_tr[~held], y_tr[~held]

    # 6. label noise (train only)
    noisy = apply_noise(y_tr, cfg.noise, classes, seed, f2c, dataset=cfg.name)

    # 7. assemble on device
    mean, std = tuple(raw.mean), tuple(raw.std)

    def make(x: torch.Tensor, y: torch.Tensor) -> ImageData:
        return ImageData(x.contiguous().to(device), y.to(device), mean, std, list(classes))

    note = src.note
    if test_split_used is not None:
        note += f"; test split carved from the only split (test_split={test_split_used})"
    meta = {
        "dataset": cfg.name, "note": note, "source_hash": fp, "classes": list(classes), "num_classes": k,
        "n_train": int(y_tr.shape[0]), "n_val": int(y_va.shape[0]), "n_test": int(y_te.shape[0]),
        "in_chans": int(x_tr.shape[1]), "img_size": int(x_tr.shape[2]), "mean": list(mean), "std": list(std),
        "test_split": test_split_used, "val_fraction": val_fraction, "data_seed": seed,
        "train_per_class": cfg.train_per_class, "test_per_class": cfg.test_per_class,
        "noise_kind": cfg.noise.kind, "noise_rate": cfg.noise.rate, "realised_rate": noisy.realised_rate,
        "n_noisy": int(noisy.mask.sum()),
    }
    return Splits(train=make(x_tr, noisy.y), val=make(x_va, y_va), test=make(x_te, y_te), num_classes=k,
                  in_chans=int(x_tr.shape[1]), img_size=int(x_tr.shape[2]), clean_train_y=y_tr.to(device),
                  noise_mask=noisy.mask.to(device), meta=meta)


def dataset_names() -> list[str]:
    """Every dataset a spec may name: the image sources and the registered loaders (e.g. text corpora)."""
    return sorted(set(DATASETS.names()) | set(LOADERS.names()))


@functools.lru_cache(maxsize=2)
def _load_cached(data_json: str, device: str) -> Any:
    cfg = parse(DataConfig, json.loads(data_json), "dataset")
    if cfg.name in LOADERS:
        return LOADERS.get(cfg.name)(cfg, torch.device(device))
    return load_splits(cfg, device=torch.device(device))


def load_data(cfg: DataConfig, device: str | torch.device = "cpu") -> Any:
    """The splits of `cfg` on `device` (image: `Splits`; a registered loader's own type), shared by the runs of
    one process that use the same dataset config and device."""
    return _load_cached(canonical_json(to_dict(cfg)), str(torch.device(device)))

