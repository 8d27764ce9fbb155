"""Spec-time checks that need more than the config's types: data sizes and paths, class lists, model kwargs.

They run while a spec is validated (before any run starts), so a bad value exits 2 naming its field instead of
failing every run later. Each check is cheap: nothing is decoded or downloaded, and models are built on the
`meta` device (no memory, no initialisation work).
"""
from __future__ import annotations

import functools
import inspect
import json
import math
from typing import Any, Callable

from bench.config import DataConfig, ModelConfig, SpecError
from bench.data import DATASETS
from bench.data.registry import resolve_root
from bench.models import HARNESS_ARGS, MODEL_FAMILIES, MODELS, build_timm
from bench.registry import Registry, suggest

# Largest per-class count of the standard files of two-split sources: (train, test). An integer train_per_class /
# test_per_class above it can never be met (smaller values may still exceed a particular class: checked at load).
KNOWN_MAX_PER_CLASS = {"cifar10": (5000, 1000), "cifar100": (500, 100), "mnist": (6742, 6742),  # one split: carved
                       "tinyimagenet": (500, 50)}

# Checks of a model family's names and kwargs (registered by the package that registers the family, under the
# same name): fn(model name, kwargs, field path of the model entry) -> None or raise SpecError.
MODEL_CHECKS: Registry[Callable[[str, dict, str], None]] = Registry("model check")


# ------------------------------------------------------------------------------------------------ data
def num_classes(name: str) -> int | None:
    """Classes of a source with fixed sizes (its `Source.sizes`), for range checks of `dataset.classes`; None
    for the rest (checked at load)."""
    src = DATASETS.get(name) if name in DATASETS else None
    return src.sizes[4] if src is not None and src.sizes else None


def check_data(cfg: DataConfig, path: str) -> None:
    """Root exists (unless it will be downloaded), class list in range, train/val sizes leave non-empty splits."""

    if cfg.root is not None:
        if not cfg.root.strip() or "\0" in cfg.root:
            raise SpecError(f"{path}.root", cfg.root, "a folder or archive path")
        root = resolve_root(cfg.root)
        if not cfg.download and (root is None or not root.exists()):
            raise SpecError(f"{path}.root", cfg.root, "an existing folder or archive (or download: true to fetch "
                                                      "the files there)")
    if cfg.classes is not None:
        k = num_classes(cfg.name)
        allowed = "a non-empty list of distinct class indices" + (f" in 0..{k - 1}" if k else " (>= 0)")
        if not cfg.classes:
            raise SpecError(f"{path}.classes", cfg.classes, allowed)
        for i, c in enumerate(cfg.classes):
            if c < 0 or (k is not None and c >= k):
                raise SpecError(f"{path}.classes[{i}]", c, allowed + (f" ({cfg.name} has {k} classes)" if k else ""))
        if len(set(cfg.classes)) != len(cfg.classes):
            raise SpecError(f"{path}.classes", cfg.classes, allowed + " (duplicates given)")
    for i, name in enumerate(("train_per_class", "test_per_class")):
        v = getattr(cfg, name)
        if v is None:
            continue
        if isinstance(v, int) and v < 1 or isinstance(v, float) and not 0.0 < v <= 1.0:
            raise SpecError(f"{path}.{name}", v, "an integer >= 1 (examples per class) or a fraction in (0, 1]")
        most = KNOWN_MAX_PER_CLASS.get(cfg.name, (None, None))[i] if cfg.root is None else None
        if isinstance(v, int) and most is not None and v > most:
            raise SpecError(f"{path}.{name}", v, f"at most {most} ({cfg.name} has at most {most} "
                                                 f"{name.split('_')[0]} examples per class)")
    n = cfg.train_per_class
    if isinstance(n, int) and cfg.val_fraction > 0:
        held = math.floor(n * cfg.val_fraction + 0.5)   # bench.data.splits.fraction_counts
        if held >= n:
            raise SpecError(f"{path}.val_fraction", cfg.val_fraction,
                            f"a fraction that leaves training examples: train_per_class={n} holds out {held} per "
                            f"class for validation, leaving none to train on")
        if held == 0:
            raise SpecError(f"{path}.val_fraction", cfg.val_fraction,
                            f"0 (no validation split) or a fraction that holds out at least one example per class "
                            f"of train_per_class={n} (round({n} * {cfg.val_fraction}) = 0)")


# ------------------------------------------------------------------------------------------------ models
def check_model(cfg: ModelConfig, path: str) -> None:
    """kwargs against the builder's signature (registered models), a family's own check, timm kwargs."""

    for family in MODEL_FAMILIES:
        if MODEL_FAMILIES.get(family).accepts(cfg.name):
            if family in MODEL_CHECKS:
                MODEL_CHECKS.get(family)(cfg.name, dict(cfg.kwargs), path)
            return
    key = json.dumps(cfg.kwargs, sort_keys=True, default=repr)
    if cfg.name.startswith("timm:"):
        if cfg.kwargs:
            _check_timm(cfg.name, key, path)
        return
    if cfg.name in MODELS:
        _check_registered(cfg.name, key, path)


@functools.lru_cache(maxsize=256)
def _check_registered(name: str, kwargs_json: str, path: str) -> None:

    kwargs = json.loads(kwargs_json)
    builder = MODELS.get(name)
    params = inspect.signature(builder).parameters
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = [p for p, v in params.items() if p not in HARNESS_ARGS and v.kind is not inspect.Parameter.VAR_KEYWORD]
    hints = _hints(builder)
    for k, v in kwargs.items():
        if k not in params or k in HARNESS_ARGS:
            if open_kwargs and k not in HARNESS_ARGS:
                continue
            raise SpecError(f"{path}.kwargs.{k}", k, f"one of {', '.join(accepted) or '(none)'} for model {name!r}"
                            f"{suggest(str(k), accepted)} (unknown key)")
        _check_type(hints.get(k), v, f"{path}.kwargs.{k}")
    _meta_build(lambda: builder(num_classes=10, in_chans=3, img_size=32, **kwargs), path, strict=True)


@functools.lru_cache(maxsize=64)
def _check_timm(name: str, kwargs_json: str, path: str) -> None:

    kwargs = json.loads(kwargs_json)
    _meta_build(lambda: build_timm(name[len("timm:"):], kwargs, num_classes=10, in_chans=3, img_size=32),
                path, strict=False)


def _meta_build(build: Callable[[], Any], path: str, *, strict: bool) -> None:
    """Build once on the meta device (no memory); a SpecError from the builder names `path`.kwargs. With
    `strict`, other errors (a builder rejecting its arguments) are SpecErrors too; else they are left to run time
    (e.g. a timm model whose size constraints depend on the real image size)."""
    import torch

    try:
        with torch.device("meta"):
            build()
    except SpecError as e:
        sub = e.path if e.path.startswith(path) else f"{path}.{e.path.removeprefix('model.')}"
        raise SpecError(sub, e.value, e.allowed) from None
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        if strict:
            raise SpecError(f"{path}.kwargs", None, f"arguments the model builder accepts ({type(e).__name__}: "
                            f"{str(e)[:300]})") from None


def _hints(fn: Callable) -> dict[str, Any]:
    try:
        import typing
        return typing.get_type_hints(fn)
    except Exception:
        return {}


def _check_type(tp: Any, value: Any, path: str) -> None:
    """Plain scalar annotations only (int, float, bool, str); anything else is left to the builder."""
    if tp is bool and not isinstance(value, bool):
        raise SpecError(path, value, "true or false")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise SpecError(path, value, "an integer")
    if tp is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or
                        not math.isfinite(float(value))):
        raise SpecError(path, value, "a finite number")
    if tp is str and not isinstance(value, str):
        raise SpecError(path, value, "a string")
