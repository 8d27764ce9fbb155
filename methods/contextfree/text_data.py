"""Text corpora for the language-model task family (context-free synthetic data card): a small registry.

A corpus is a list of documents (strings). `load_text_splits(DataConfig)` splits the documents (not characters)
into train (pretraining of the original model), val (held-out text: real-replay source and contextual prompts)
and test (held-out text: bits per character, i.e. forgetting). The split is a seeded permutation of documents
(stream `text_split` of `dataset.seed`) after dropping exact duplicate documents; `dataset.val_fraction` and
`dataset.test_split` (default 0.1) are the fractions of documents held out. Other DataConfig fields (classes,
*_per_class, noise) must stay at their defaults.

- `pydoc` (embedded, ships with Python): the `pydoc_data.topics` help texts, split into paragraphs.
- `tinyshakespeare`: `<data root>/text/tinyshakespeare.txt` (or `dataset.root`), split into speeches (blank lines).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from bench.config import DataConfig, SpecError
from bench.data.registry import LOADERS
from bench.paths import data_root
from bench.registry import Registry
from bench.seeding import generator

TEXT_DATASETS: Registry[Callable[[DataConfig], tuple[list[str], dict]]] = Registry("text dataset")
DEFAULT_TEST_SPLIT = 0.1


def split_documents(text: str, min_chars: int = 1) -> list[str]:
    """Documents = blocks separated by one or more blank lines, stripped; shorter than min_chars dropped."""
    docs = [d.strip("\n") for d in re.split(r"\n\s*\n", text)]
    return [d for d in docs if len(d.strip()) >= min_chars]


@TEXT_DATASETS.register("pydoc")
def _pydoc(cfg: DataConfig) -> tuple[list[str], dict]:
    from pydoc_data.topics import topics
    text = "\n\n".join(topics[k] for k in sorted(topics))
    return split_documents(text, min_chars=20), {"source": "pydoc_data.topics (embedded)", "sha256": _sha(text)}


@TEXT_DATASETS.register("tinyshakespeare")
def _tinyshakespeare(cfg: DataConfig) -> tuple[list[str], dict]:
    path = Path(cfg.root) if cfg.root else data_root() / "text" / "tinyshakespeare.txt"
    if path.is_dir():
        path = path / "tinyshakespeare.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (set dataset.root or FORGETBENCH_DATA)")
    text = path.read_text(encoding="utf-8")
    return split_documents(text), {"source": str(path), "sha256": _sha(text)}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class TextSplits:
    """Documents of one corpus split three ways; `meta` is the provenance stored in result.json."""
    train: list[str]
    val: list[str]
    test: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


def check_text_config(cfg: DataConfig, path: str = "dataset") -> None:
    """Reject image-only DataConfig fields on a text dataset (SpecError naming the field)."""
    if cfg.name not in TEXT_DATASETS:
        raise SpecError(f"{path}.name", cfg.name, f"one of {', '.join(TEXT_DATASETS.names())}")
    for name in ("classes", "train_per_class", "test_per_class"):
        if getattr(cfg, name) is not None:
            raise SpecError(f"{path}.{name}", getattr(cfg, name), "null (not used by text datasets)")
    if cfg.noise.kind != "none":
        raise SpecError(f"{path}.noise.kind", cfg.noise.kind, "'none' (no label noise for text datasets)")
    test = DEFAULT_TEST_SPLIT if cfg.test_split is None else cfg.test_split
    if test <= 0 or cfg.val_fraction + test >= 1:
        raise SpecError(f"{path}.test_split", cfg.test_split, "in (0, 1) with val_fraction + test_split < 1")


def load_text_splits(cfg: DataConfig) -> TextSplits:
    """Documents of `cfg.name`, split by a seeded permutation of documents into train / val / test."""
    check_text_config(cfg)
    raw, meta = TEXT_DATASETS.get(cfg.name)(cfg)
    docs = list(dict.fromkeys(raw))  # exact duplicates kept once: held-out text never also appears in train
    meta["duplicates_dropped"] = len(raw) - len(docs)
    n = len(docs)
    test_frac = DEFAULT_TEST_SPLIT if cfg.test_split is None else cfg.test_split
    n_test, n_val = max(1, round(test_frac * n)), round(cfg.val_fraction * n)
    perm = torch.randperm(n, generator=generator(cfg.seed, "text_split")).tolist()
    test = [docs[i] for i in sorted(perm[:n_test])]
    val = [docs[i] for i in sorted(perm[n_test:n_test + n_val])]
    train = [docs[i] for i in sorted(perm[n_test + n_val:])]
    meta = {"name": cfg.name, **meta, "documents": {"train": len(train), "val": len(val), "test": len(test)},
            "chars": {"train": sum(map(len, train)), "val": sum(map(len, val)), "test": sum(map(len, test))},
            "seed": cfg.seed}
    return TextSplits(train=train, val=val, test=test, meta=meta)


def _register_loaders() -> None:
    """Every corpus is a dataset name the engine can load (RunContext.data) and validate (spec names)."""
    for name in TEXT_DATASETS.names():
        LOADERS.register(name)(lambda cfg, device: load_text_splits(cfg))


_register_loaders()

