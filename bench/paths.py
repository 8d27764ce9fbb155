"""Default locations: shared data folder and the decoded-dataset cache."""
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
