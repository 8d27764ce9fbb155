from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.paths import data_root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets folder (../shared/data); tests that need it skip cleanly where it is absent."""
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"real data folder {root} is absent (set FORGETBENCH_DATA)")
    return root


@pytest.fixture()
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture()
def one_torch_thread():
    """Tiny nets: one torch thread avoids oversubscription on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
