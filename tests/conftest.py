from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

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


TINY = {"name": "tiny", "seeds": [0], "datasets": [{"name": "digits", "val_fraction": 0.1}],
        "models": [{"name": "small_cnn", "width": 8}], "methods": ["naive"],
        "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}}


def tiny_spec_dict(**over: Any) -> dict:
    """The tiny digits spec every engine test starts from, with `over` applied: a top-level key replaces that
    section; a dotted key (`train.epochs`, written `train__epochs` as a keyword) sets one nested field."""
    spec = copy.deepcopy(TINY)
    for key, value in over.items():
        node, parts = spec, key.replace("__", ".").split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = copy.deepcopy(value)
    return spec


@pytest.fixture()
def tiny_spec(tmp_path: Path):
    """tiny_spec(**over) -> the path of a YAML spec written into tmp_path (see tiny_spec_dict)."""
    def write(file: str = "spec.yaml", **over: Any) -> Path:
        path = tmp_path / file
        path.write_text(yaml.safe_dump(tiny_spec_dict(**over), sort_keys=False))
        return path
    return write
