"""Independent random streams derived from (seed, stream name), so adding a stream never shifts another."""
from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for the named stream; stable across Python versions and platforms."""
    digest = hashlib.sha256(f"{int(seed)}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator on `device` seeded for the named stream."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, stream))
    return g


def seed_everything(seed: int) -> None:
    """Seed the global RNGs (for code we do not control, e.g. timm init) and ask torch for determinism."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
