"""Default locations: shared data folder, the decoded-dataset cache and the compiled-kernel cache."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """$FORGETBENCH_DATA, else ../shared/data next to the project (may not exist)."""
    return Path(os.environ.get("FORGETBENCH_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def cache_root() -> Path:
    """$FORGETBENCH_CACHE, else ~/.cache/forgetbench/data (decoded datasets keyed by source hash)."""
    return Path(os.environ.get("FORGETBENCH_CACHE", Path.home() / ".cache" / "forgetbench" / "data"))


def kernel_cache_root() -> Path:
    """$FORGETBENCH_KERNEL_CACHE, else ~/.cache/forgetbench/kernels (compiled CPU kernels keyed by source and CPU)."""
    return Path(os.environ.get("FORGETBENCH_KERNEL_CACHE", Path.home() / ".cache" / "forgetbench" / "kernels"))
