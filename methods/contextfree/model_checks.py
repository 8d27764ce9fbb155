"""Spec-time checks of the language-model family (registered with bench.checks.MODEL_CHECKS): an `hf:<dir>`
model must name an existing local folder; `tiny_lm` kwargs must be TinyLM's (integers >= 1, d_model a multiple of
n_head, dropout in [0, 1)). Hugging Face kwargs are checked where the model is built (methods/contextfree/lm.py)."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from bench.checks import MODEL_CHECKS
from bench.config import SpecError
from bench.registry import suggest
from methods.contextfree.lm import HF_PREFIX, LM_MODELS, TinyLM, check_hf_kwargs


@MODEL_CHECKS.register("language models")
def check_lm_model(name: str, kwargs: dict[str, Any], path: str) -> None:
    if name.startswith(HF_PREFIX):
        folder = name[len(HF_PREFIX):]
        if not folder.strip() or "\0" in folder or not Path(folder).expanduser().is_dir():
            raise SpecError(f"{path}.name", name, f"{HF_PREFIX}<an existing local model directory>")
        check_hf_kwargs(kwargs, f"{path}.kwargs")  # allowed keys; trust_remote_code only with the CLI flag
        return
    if name not in LM_MODELS:
        return
    params = [p for p in inspect.signature(TinyLM.__init__).parameters if p != "self"]
    for k, v in kwargs.items():
        if k not in params:
            raise SpecError(f"{path}.kwargs.{k}", k, f"one of {', '.join(params)}{suggest(str(k), params)} "
                                                     f"(unknown key)")
        if k == "dropout":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
                raise SpecError(f"{path}.kwargs.{k}", v, "a number in [0, 1)")
        elif isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SpecError(f"{path}.kwargs.{k}", v, "an integer >= 1")
    d_model, n_head = kwargs.get("d_model", 64), kwargs.get("n_head", 4)
    if d_model % n_head:
        raise SpecError(f"{path}.kwargs.n_head", n_head, f"a divisor of d_model={d_model}")
