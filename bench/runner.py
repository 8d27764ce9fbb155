"""Execute one run: skip if done, else run its method and write result.json (atomically, last).

One run, one writer: the run is executed under a per-run file lock (`<run dir>/run.lock`). A process that finds
the lock held skips the run (status "running"); under the lock a run that is already done is skipped too, so
two `forgetbench run` processes on one store never execute a run twice, and metrics.jsonl is reset under the
lock (never duplicated epochs). A results store that cannot be written (disk full, read-only, no permission)
raises `StoreWriteError` (the sweep stops with one message); the run stays pending, nothing is half-written.
"""
from __future__ import annotations

import errno
import os
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

from filelock import FileLock, Timeout

from bench.config import RunConfig, to_dict
from bench.device import resolve_device
from bench.ids import run_id
from bench.method import RunContext, make_method
from bench.provenance import device_info, git_sha, git_state, library_versions
from bench.seeding import seed_everything
from bench.store import (
    CONFIG,
    METRICS,
    RESULT,
    RUN_LOCK,
    atomic_torch_save,
    atomic_write_json,
    clear_running,
    mark_running,
    read_json,
    run_dir,
)
from bench.train import NonFiniteLoss


# errno values that mean the results store cannot be written (whichever file it is)
STORE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT}
# ... and those that do when the file is inside the store
STORE_PATH_ERRNOS = {errno.EACCES, errno.EPERM}


class StoreWriteError(OSError):
    """The results store cannot be written: the sweep stops (the run stays pending, nothing half-written).
    An OSError (errno, strerror, filename) so that it pickles across worker processes and the command line
    prints it as one line."""


def store_write_error(e: BaseException, out: Path) -> StoreWriteError | None:
    """A StoreWriteError for `e` when it says the store under `out` cannot be written, else None."""
    if not isinstance(e, OSError):
        return None
    inside = False
    for name in (e.filename, getattr(e, "filename2", None)):
        if name:
            try:
                inside = inside or Path(os.path.abspath(os.fsdecode(name))).is_relative_to(Path(out).absolute())
            except (TypeError, ValueError):
                pass
    if isinstance(e, StoreWriteError):
        return e
    if e.errno in STORE_ERRNOS or (e.errno in STORE_PATH_ERRNOS and inside):
        return StoreWriteError(e.errno, f"cannot write the results store {out}: {e.strerror or e}", e.filename)
    return None


LOCK_WAIT_S = 1.0  # longer than anyone but the run's executor holds the lock (bench.store.is_running probes it)


def execute_run(run: RunConfig, out: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Run `run` into `out/<spec>/<id>/` unless it is done or another process is running it; return a short
    summary (status "done", "failed", "skipped" or "running"). Raises StoreWriteError when `out` is not
    writable."""
    out = Path(out)
    rid = run_id(run)
    rdir = run_dir(out, run.spec, rid)
    previous = read_json(rdir / RESULT)
    if isinstance(previous, dict) and previous.get("status") == "done":
        return {"run_id": rid, "status": "skipped"}
    try:
        rdir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(rdir / RUN_LOCK))
        lock.acquire(timeout=LOCK_WAIT_S)
    except Timeout:
        return {"run_id": rid, "status": "running", "reason": "another process is running it"}
    except OSError as e:
        _reraise(e, out)
    try:
        return _execute_locked(run, out, rid, rdir, progress)
    except OSError as e:
        _reraise(e, out)
    finally:
        lock.release()


def _reraise(e: OSError, out: Path) -> NoReturn:
    """Raise the one-line StoreWriteError for a write error inside the store; other OS errors as they are."""
    err = store_write_error(e, out)
    if err is None:
        raise e
    raise err from e


def _execute_locked(run: RunConfig, out: Path, rid: str, rdir: Path, progress: bool) -> dict[str, Any]:
    previous = read_json(rdir / RESULT)  # again, under the lock: another process may have just finished it
    if isinstance(previous, dict) and previous.get("status") == "done":
        return {"run_id": rid, "status": "skipped"}
    (rdir / RESULT).unlink(missing_ok=True)  # a failed or unreadable attempt: retry
    atomic_write_json(rdir / CONFIG, {"run_id": rid, **to_dict(run)})
    (rdir / METRICS).unlink(missing_ok=True)  # this attempt logs every epoch again
    mark_running(rdir)  # `forgetbench status`: running while this process lives, else interrupted

    start, started_at = time.perf_counter(), datetime.now(timezone.utc).isoformat()
    device = resolve_device(run.device)
    result: dict[str, Any] = {"run_id": rid, "spec": run.spec, "config": to_dict(run), "git_sha": git_sha(),
                              **git_state(), "versions": library_versions(), "device": device_info(device),
                              "started_at": started_at, "pid": os.getpid()}
    try:
        seed_everything(run.seed)
        method = make_method(run)
        ctx = RunContext(config=run, run_dir=rdir, stages_dir=out / "_stages", device=device,
                         progress=progress)
        res = method.run(ctx)
        for name, tensor in res.artifacts.items():
            atomic_torch_save(rdir / "artifacts" / f"{name}.pt", tensor.detach().cpu())
        result.update(status="done", metrics=res.metrics, timings=res.timings, data=ctx.data.meta)
    except NonFiniteLoss as e:
        result.update(status="failed", reason=f"non-finite loss: {e}")
    except Exception as e:  # a failed run is recorded, not fatal to the sweep
        err = store_write_error(e, out)
        if err is not None:  # ... unless the store cannot be written: stop, leave the run pending
            raise err from e
        result.update(status="failed", reason=f"{type(e).__name__}: {e}",
                      traceback=traceback.format_exc(limit=20))
    result.update(wall_time_s=time.perf_counter() - start, finished_at=datetime.now(timezone.utc).isoformat())
    atomic_write_json(rdir / RESULT, result)
    clear_running(rdir)
    return {"run_id": rid, "status": result["status"], "reason": result.get("reason"),
            "wall_time_s": result["wall_time_s"]}
