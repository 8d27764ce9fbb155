"""The results store: one folder per run, files written atomically, `result.json` last.

Layout: DIR/<spec>/<run id>/{config.json, metrics.jsonl, artifacts/, result.json}; DIR/<spec>/sweep.json lists
the spec's runs; DIR/_stages/ holds shared stages (e.g. a base training run read by several methods).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch

RESULT = "result.json"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
SWEEP = "sweep.json"
RUN_LOCK = "run.lock"  # held by the process executing the run (bench.runner)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    """torch.save through a temp file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            break  # a torn last line from a killed writer: ignore it
    return out


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows).encode())


def run_dir(out: Path, spec: str, rid: str) -> Path:
    return Path(out) / spec / rid


def is_running(rdir: Path) -> bool:
    """True while some process holds the run's lock (executing it right now)."""
    from filelock import FileLock, Timeout
    path = Path(rdir) / RUN_LOCK
    if not path.is_file():
        return False
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:  # a read-only store: nobody can be running there
        return False
    lock.release()
    return False


def is_done(rdir: Path) -> bool:
    res = read_json(Path(rdir) / RESULT)
    return bool(res) and res.get("status") == "done"


def spec_dirs(root: Path) -> list[Path]:
    """Spec folders under `root`, or [root] itself when it is a spec folder."""
    root = Path(root)
    if (root / SWEEP).is_file():
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / SWEEP).is_file()) if root.is_dir() else []


def sweep_status(spec_dir: Path) -> dict[str, Any]:
    """Counts of done / failed / pending runs of one spec folder, with the failures' reasons."""
    sweep = read_json(Path(spec_dir) / SWEEP) or {}
    counts = {"done": 0, "failed": 0, "pending": 0}
    failures = []
    for rid in sweep.get("runs", []):
        res = read_json(Path(spec_dir) / rid / RESULT)
        status = res.get("status") if res else "pending"
        counts[status if status in counts else "pending"] += 1
        if status == "failed":
            failures.append((rid, res.get("reason", "")))
    return {"spec": sweep.get("name", Path(spec_dir).name), "total": len(sweep.get("runs", [])), **counts,
            "failures": failures}
