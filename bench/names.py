"""Name checks used by spec validation: datasets, models (registered or timm:<name>) and methods."""
from __future__ import annotations

from typing import Any

from bench.config import SpecError, parse
from bench.registry import suggest


def check_dataset(name: str, path: str) -> None:
    from bench.data import DATASETS
    from bench.text_data import TEXT_DATASETS  # text corpora (language-model methods)
    if name not in DATASETS and name not in TEXT_DATASETS:
        names = DATASETS.names() + TEXT_DATASETS.names()
        raise SpecError(path, name, f"one of {', '.join(names)}{suggest(name, names)}")


def check_model(name: str, path: str) -> None:
    from bench.models import MODELS
    from bench.lm import HF_PREFIX, LM_MODELS  # language models: tiny_lm, hf:<local directory>
    if name in LM_MODELS or (name.startswith(HF_PREFIX) and len(name) > len(HF_PREFIX)):
        return
    if name.startswith("timm:"):
        import timm
        if not timm.is_model(name[5:]):
            options = timm.list_models(f"*{name[5:][:4]}*")[:200]
            raise SpecError(path, name, f"a timm model name after 'timm:'{suggest(name[5:], options)}")
        return
    if name not in MODELS:
        raise SpecError(path, name, f"one of {', '.join(MODELS.names())} or timm:<name>{suggest(name, MODELS.names())}")


def check_method(name: str, path: str) -> None:
    from bench.method import METHODS, load_methods
    load_methods()
    if name not in METHODS:
        raise SpecError(path, name, f"one of {', '.join(METHODS.names())}{suggest(name, METHODS.names())}")


def method_params(name: str, params: dict[str, Any], path: str) -> Any:
    """The method's Params dataclass filled from `params` (unknown keys and bad values rejected)."""
    from bench.method import METHODS
    return parse(METHODS.get(name).Params, params, path)
