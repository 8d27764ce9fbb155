"""The DATASETS registry of raw image sources and the RawData they return (uint8 tensors, decoded once, cached)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from bench.config import DataConfig, SpecError
import bench.data.cache as _cache
from bench.paths import data_root
from bench.registry import Registry


@dataclass
class RawData:
    """One dataset as decoded from disk, before any class filter, subsetting, split or noise.

    x_*: uint8 [N, C, H, W]; y_*: int64 [N]. x_test/y_test are None for single-split sources (the test split
    is then carved out of the train arrays by `dataset.test_split`). `fine_to_coarse[k]` is the superclass
    of class k (CIFAR-100), used by asymmetric noise. mean/std: per channel in [0, 1] units.
    """
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: Optional[torch.Tensor]
    y_test: Optional[torch.Tensor]
    classes: list[str]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    fine_to_coarse: Optional[list[int]] = None
    coarse_classes: Optional[list[str]] = None

    @property
    def single_split(self) -> bool:
        return self.x_test is None

    def state(self) -> dict[str, Any]:
        return {"x_train": self.x_train, "y_train": self.y_train, "x_test": self.x_test, "y_test": self.y_test,
                "classes": list(self.classes), "mean": list(self.mean), "std": list(self.std),
                "fine_to_coarse": self.fine_to_coarse, "coarse_classes": self.coarse_classes}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> "RawData":
        return cls(x_train=s["x_train"], y_train=s["y_train"], x_test=s["x_test"], y_test=s["y_test"],
                   classes=list(s["classes"]), mean=tuple(s["mean"]), std=tuple(s["std"]),
                   fine_to_coarse=s["fine_to_coarse"], coarse_classes=s["coarse_classes"])

    def check(self, where: str) -> "RawData":
        """Shape/dtype/label sanity, so a broken decoder fails loudly here rather than in training."""
        pairs = [(self.x_train, self.y_train)] + ([] if self.x_test is None else [(self.x_test, self.y_test)])
        for x, y in pairs:
            if x.dtype != torch.uint8 or x.dim() != 4 or y is None or y.dtype != torch.int64 or y.dim() != 1 \
                    or x.shape[0] != y.shape[0]:
                raise ValueError(f"{where}: decoder returned x {tuple(x.shape)} {x.dtype}, y "
                                 f"{None if y is None else (tuple(y.shape), y.dtype)}; need uint8 [N,C,H,W], int64 [N]")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise ValueError(f"{where}: labels outside 0..{len(self.classes) - 1}")
        if self.x_test is not None and self.x_test.shape[1:] != self.x_train.shape[1:]:
            raise ValueError(f"{where}: train images {tuple(self.x_train.shape[1:])} but test images "
                             f"{tuple(self.x_test.shape[1:])}")
        return self


def channel_stats(*xs: Optional[torch.Tensor]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std (in [0, 1] units) of uint8 images, via 256-bin histograms (no float copy)."""
    xs_ = [x for x in xs if x is not None and x.numel()]
    chans = xs_[0].shape[1]
    levels = np.arange(256, dtype=np.float64) / 255.0
    mean, std = [], []
    for c in range(chans):
        hist = sum(torch.bincount(x[:, c].reshape(-1), minlength=256).double().numpy() for x in xs_)
        n = hist.sum()
        m = float((hist * levels).sum() / n)
        v = float((hist * (levels - m) ** 2).sum() / n)
        mean.append(round(m, 4))
        std.append(round(max(v, 1e-12) ** 0.5, 4))
    return tuple(mean), tuple(std)


class Source:
    """A raw dataset: where its files are (`locate`), what identifies them (`fingerprint`), how to decode them.

    Subclasses set `name`, `kind` (cache key prefix: sources sharing a decoder share cache files), `note`,
    and optionally fixed `mean`/`std` (else computed from the data at decode time and cached).
    """
    name: str = ""
    kind: str = ""
    note: str = ""
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    sizes: tuple[int, int, int, int, int] | None = None   # full (train, test, channels, side, classes), if fixed

    def locate(self, cfg: DataConfig) -> Optional[Path]:
        """The file or folder to read (downloading it first if `cfg.download`); None for built-in data."""
        return None

    def fingerprint(self, path: Optional[Path], cache_dir: Optional[Path] = None) -> str:
        """Identity of the source files: sha256 of an archive (memoised under `cache_dir`), names+sizes+mtimes
        hash of a folder, or e.g. the library version for built-in data."""
        raise NotImplementedError

    def decode(self, path: Optional[Path]) -> RawData:
        raise NotImplementedError

    def finish(self, raw: RawData) -> RawData:
        """Post-processing after a (cached) decode, e.g. renaming classes; must be cheap."""
        return raw

    def load(self, cfg: DataConfig, cache_dir: Optional[Path] = None) -> tuple[RawData, str]:
        """(RawData, source fingerprint), decoded once and then read from the cache."""
        path = self.locate(cfg)
        fp = self.fingerprint(path, cache_dir)

        def build() -> dict[str, Any]:
            raw = self.decode(path)
            if not raw.mean:
                raw.mean, raw.std = channel_stats(raw.x_train, raw.x_test)
            return raw.check(f"{self.name} ({path})").state()

        raw = RawData.from_state(_cache.cached(self.kind or self.name, fp, build, cache_dir))
        if self.mean:
            raw.mean, raw.std = tuple(self.mean), tuple(self.std)
        return self.finish(raw), fp


DATASETS: Registry[Source] = Registry("dataset")


def register(source_cls: type[Source]) -> type[Source]:
    """Class decorator: register one instance of a Source subclass under its `name`."""
    DATASETS.register(source_cls.name)(source_cls())
    return source_cls


def get_source(name: str) -> Source:
    """The registered source; an unknown name is a SpecError on `dataset.name` with the closest name."""
    if name not in DATASETS:
        raise SpecError("dataset.name", name, DATASETS.unknown_message(name))
    return DATASETS.get(name)


def resolve_root(root: Optional[str]) -> Optional[Path]:
    """`dataset.root` as a Path: as given (~ expanded) if it exists, else relative to data_root() if that exists."""
    if root is None:
        return None
    p = Path(root).expanduser()
    if not p.exists() and not p.is_absolute() and (data_root() / p).exists():
        return data_root() / p
    return p


# Datasets loaded outside the image pipeline (e.g. a paper package's text corpora): name -> (cfg, device) -> splits
# with a `meta` dict. Registered by the package that owns them; RunContext.data and spec validation consult it.
LOADERS: Registry[Callable[[DataConfig, torch.device], Any]] = Registry("dataset loader")

