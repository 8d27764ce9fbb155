"""What produced a result: git sha, library versions, device, host."""
from __future__ import annotations

import functools
import platform
import subprocess
import sys
from importlib import metadata

import torch

from bench.paths import PROJECT_ROOT

LIBRARIES = ("torch", "torchvision", "timm", "numpy", "scikit-learn", "pandas", "pyyaml")


@functools.lru_cache(maxsize=1)
def git_sha() -> str:
    """HEAD's sha, with '-dirty' when tracked files differ; 'unknown' outside a checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("-dirty" if sha and dirty else "")


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def device_info(device: torch.device) -> dict[str, str | int]:
    info: dict[str, str | int] = {"device": str(device), "host": platform.node(), "cpu": platform.machine(),
                                  "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = str(torch.version.cuda)
    return info
