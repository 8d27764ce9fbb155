"""The results store: one folder per run, files written atomically, `result.json` last.

Layout: DIR/<spec>/<run id>/{config.json, metrics.jsonl, artifacts/, result.json}; DIR/<spec>/sweep.json lists
the spec's runs; DIR/_stages/ holds shared stages (e.g. a base training run read by several methods).
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch

from bench.config import StoreError
from bench.ids import run_id

RESULT = "result.json"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
SWEEP = "sweep.json"
RUN_LOCK = "run.lock"  # held by the process executing the run (bench.runner)
RUNNING = "running.json"  # {pid, host, started_at}: written when a run starts, removed once result.json is written


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


def mark_running(rdir: Path) -> None:
    """Record that this process is executing the run in `rdir` (read by `run_state`)."""
    from datetime import datetime, timezone
    atomic_write_json(Path(rdir) / RUNNING, {"pid": os.getpid(), "host": socket.gethostname(),
                                             "proc_start": _proc_start(os.getpid()),
                                             "started_at": datetime.now(timezone.utc).isoformat()})


def clear_running(rdir: Path) -> None:
    (Path(rdir) / RUNNING).unlink(missing_ok=True)


def _proc_start(pid: int) -> int | None:
    """The start time of process `pid` (clock ticks since boot, /proc/<pid>/stat field 22): with the pid it
    names one process, even after the pid is reused. None where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 else None


def pid_alive(pid: int, proc_start: int | None = None) -> bool:
    """Whether process `pid` of this host exists and is not a zombie (and, when given, started at
    `proc_start`, i.e. is the same process, not a reuse of its pid)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    except OSError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        if state in ("Z", "X"):
            return False
    except OSError:
        pass
    return proc_start is None or _proc_start(pid) in (None, proc_start)


def run_state(rdir: Path) -> str | None:
    """For a run without a final result: "running" when its `running.json` names a live process on this host,
    "interrupted" when it names a dead one (killed, Ctrl-C: rerunning resumes it), None when it never started
    here. A run started on another host counts as running only while its run lock is held."""
    info = read_json(Path(rdir) / RUNNING)
    if not isinstance(info, dict):
        return "running" if is_running(rdir) else None
    if info.get("host") != socket.gethostname():
        return "running" if is_running(rdir) else "interrupted"
    try:
        pid = int(info.get("pid"))
    except (TypeError, ValueError):
        return "interrupted"
    start = info.get("proc_start")
    return "running" if pid_alive(pid, start if isinstance(start, int) else None) else "interrupted"


def sweep_status(spec_dir: Path) -> dict[str, Any]:
    """Counts of done / failed / running / interrupted / pending runs of one spec folder, with the failures'
    reasons. Running and interrupted: see `run_state`."""
    sweep = read_json(Path(spec_dir) / SWEEP) or {}
    counts = {"done": 0, "failed": 0, "running": 0, "interrupted": 0, "pending": 0}
    failures = []
    for rid in sweep.get("runs", []):
        res = read_json(Path(spec_dir) / rid / RESULT)
        status = res.get("status") if isinstance(res, dict) else None
        if status not in ("done", "failed"):
            status = run_state(Path(spec_dir) / rid) or "pending"
        counts[status] += 1
        if status == "failed":
            failures.append((rid, res.get("reason", "")))
    return {"spec": sweep.get("name", Path(spec_dir).name), "total": len(sweep.get("runs", [])), **counts,
            "failures": failures}


def finished_results(spec_dir: Path) -> list[dict]:
    """The parsed result.json of the runs of one spec folder that have one (any status)."""
    sweep = read_json(Path(spec_dir) / SWEEP) or {}
    out = []
    for rid in sweep.get("runs", []):
        res = read_json(Path(spec_dir) / rid / RESULT)
        if isinstance(res, dict):
            out.append(res)
    return out


def register_sweep(out: Path, name: str, source: Any, runs: list) -> list:
    """Record a spec and its run ids in out/<name>/sweep.json (ids of earlier versions of the spec kept, so
    `status` still sees them); return the runs not done yet."""
    spec_dir = Path(out) / name
    sweep = read_json(spec_dir / SWEEP) or {}
    if not isinstance(sweep, dict):
        raise StoreError(f"{spec_dir / SWEEP} holds a JSON {type(sweep).__name__}, not a sweep record (delete it: "
                         "`run` rewrites it)")
    ids = [run_id(r) for r in runs]
    atomic_write_json(spec_dir / SWEEP, {"name": name, "runs": list(dict.fromkeys([*sweep.get("runs", []), *ids])),
                                         "spec": source})
    return [r for r, rid in zip(runs, ids) if not is_done(run_dir(out, name, rid))]

