"""The compute device of a run: 'auto' (cuda when available, else cpu), 'cpu', 'cuda' or 'cuda:<index>'."""
from __future__ import annotations

import torch

from bench.config import SpecError

ALLOWED = "'auto', 'cpu', 'cuda' or 'cuda:<index>'"


def resolve_device(name: str) -> torch.device:
    """torch.device for `name`; a SpecError on field `device` when it is malformed or not present here."""
    if not isinstance(name, str):
        raise SpecError("device", name, ALLOWED)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise SpecError("device", name, ALLOWED) from None
    if dev.type == "cpu":
        return dev if dev.index is None else torch.device("cpu")
    if dev.type != "cuda":
        raise SpecError("device", name, ALLOWED)
    if not torch.cuda.is_available():
        raise SpecError("device", name, "'auto' or 'cpu' (CUDA is not available on this machine)")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise SpecError("device", name, f"'cuda:0' .. 'cuda:{count - 1}' ({count} CUDA device(s) here)")
    return dev
