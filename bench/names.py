"""Name checks used by spec validation: datasets, models (registered, a paper's model family, or timm:<name>)
and methods. Paper packages register their names through the registries; `load_plugins` imports them first."""
from __future__ import annotations

from typing import Any

import timm

from bench.config import SpecError, parse
from bench.data import dataset_names
from bench.method import METHODS
from bench.models import MODEL_FAMILIES, MODELS
from bench.plugins import load_plugins
from bench.registry import suggest


def check_dataset(name: str, path: str) -> None:
    load_plugins()
    names = dataset_names()
    if name not in names:
        raise SpecError(path, name, f"one of {', '.join(names)}{suggest(name, names)}")


def check_model(name: str, path: str) -> None:
    load_plugins()
    if any(MODEL_FAMILIES.get(f).accepts(name) for f in MODEL_FAMILIES):
        return
    if name.startswith("timm:"):
        if not timm.is_model(name[5:]):
            options = timm.list_models(f"*{name[5:][:4]}*")[:200]
            raise SpecError(path, name, f"a timm model name after 'timm:'{suggest(name[5:], options)}")
        return
    if name not in MODELS:
        names = MODELS.names() + [n for f in MODEL_FAMILIES for n in MODEL_FAMILIES.get(f).describe()]
        raise SpecError(path, name, f"one of {', '.join(names)} or timm:<name>{suggest(name, names)}")


def check_method(name: str, path: str) -> None:
    load_plugins()
    if name not in METHODS:
        raise SpecError(path, name, f"one of {', '.join(METHODS.names())}{suggest(name, METHODS.names())}")


def method_params(name: str, params: dict[str, Any], path: str) -> Any:
    """The method's Params dataclass filled from `params` (unknown keys and bad values rejected)."""
    return parse(METHODS.get(name).Params, params, path)
