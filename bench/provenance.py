"""What produced a result: git sha (and whether the tree was dirty, with a hash of its diff), library versions,
device, host; and the check that one sweep's finished runs come from one code version."""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

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
def git_state() -> dict[str, bool | str | None]:
    """{"git_dirty": tracked files differ from HEAD, "git_diff_hash": sha256 (16 hex) of `git diff HEAD` when
    dirty}; None for both outside a checkout. Two results with the same sha and diff hash ran the same code."""
    try:
        p = subprocess.run(["git", "diff", "HEAD", "--no-ext-diff", "--no-color", "--binary"], cwd=PROJECT_ROOT,
                           capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {"git_dirty": None, "git_diff_hash": None}
    if p.returncode != 0:
        return {"git_dirty": None, "git_diff_hash": None}
    dirty = bool(p.stdout.strip())
    return {"git_dirty": dirty, "git_diff_hash": hashlib.sha256(p.stdout).hexdigest()[:16] if dirty else None}


def code_version(res: dict) -> str:
    """The code a result came from: its git sha (with -dirty) and, for a dirty tree, the hash of its diff."""
    sha = str(res.get("git_sha") or "unknown")
    h = res.get("git_diff_hash")
    return f"{sha} (diff {str(h)[:12]})" if h else sha


def code_versions(results: Iterable[dict]) -> dict[str, int]:
    """How many of the finished `results` (parsed result.json) come from each code version."""
    counts: dict[str, int] = {}
    for res in results:
        if isinstance(res, dict) and res.get("status") == "done":
            v = code_version(res)
            counts[v] = counts.get(v, 0) + 1
    return counts


def mixed_versions_warning(spec: str, results: Iterable[dict]) -> str | None:
    """A one-line warning when the finished runs of sweep `spec` come from more than one code version."""
    counts = code_versions(results)
    if len(counts) <= 1:
        return None
    parts = "; ".join(f"{v}: {n} runs" for v, n in sorted(counts.items(), key=lambda kv: -kv[1])[:5])
    more = f"; … and {len(counts) - 5} more" if len(counts) > 5 else ""
    return (f"warning: {spec}: the finished runs come from {len(counts)} code versions ({parts}{more}); their "
            "numbers may not be comparable: rerun them under one version (delete the stale runs' folders)")


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


def machine_info() -> dict[str, Any]:
    """The machine a targets file or benchmark was produced on: platform, CPU model, core count, torch threads."""
    cpu = platform.processor()
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch_threads_main": torch.get_num_threads()}
