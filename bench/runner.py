"""Execute one run: skip if done, else run its method and write result.json (atomically, last)."""
from __future__ import annotations

import os
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.config import RunConfig, parse, to_dict
from bench.device import resolve_device
from bench.ids import run_id
from bench.method import METHODS, RunContext, load_methods
from bench.provenance import device_info, git_sha, library_versions
from bench.seeding import seed_everything
from bench.store import (
    CONFIG,
    METRICS,
    RESULT,
    atomic_torch_save,
    atomic_write_json,
    read_json,
    run_dir,
)
from bench.train import NonFiniteLoss


def execute_run(run: RunConfig, out: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Run `run` into `out/<spec>/<id>/` unless it is already done; return a short summary."""

    rid = run_id(run)
    rdir = run_dir(Path(out), run.spec, rid)
    previous = read_json(rdir / RESULT)
    if previous and previous.get("status") == "done":
        return {"run_id": rid, "status": "skipped"}
    rdir.mkdir(parents=True, exist_ok=True)
    if previous is not None:
        (rdir / RESULT).unlink()  # a failed attempt: retry
    atomic_write_json(rdir / CONFIG, {"run_id": rid, **to_dict(run)})
    (rdir / METRICS).unlink(missing_ok=True)

    start, started_at = time.perf_counter(), datetime.now(timezone.utc).isoformat()
    device = resolve_device(run.device)
    result: dict[str, Any] = {"run_id": rid, "spec": run.spec, "config": to_dict(run), "git_sha": git_sha(),
                              "versions": library_versions(), "device": device_info(device),
                              "started_at": started_at, "pid": os.getpid()}
    try:
        load_methods()
        seed_everything(run.seed)
        method = METHODS.get(run.method.name)(_params(run))
        ctx = RunContext(config=run, run_dir=rdir, stages_dir=Path(out) / "_stages", device=device,
                         progress=progress)
        res = method.run(ctx)
        for name, tensor in res.artifacts.items():
            atomic_torch_save(rdir / "artifacts" / f"{name}.pt", tensor.detach().cpu())
        result.update(status="done", metrics=res.metrics, timings=res.timings, data=ctx.data.meta)
    except NonFiniteLoss as e:
        result.update(status="failed", reason=f"non-finite loss: {e}")
    except Exception as e:  # a failed run is recorded, not fatal to the sweep
        result.update(status="failed", reason=f"{type(e).__name__}: {e}",
                      traceback=traceback.format_exc(limit=20))
    result.update(wall_time_s=time.perf_counter() - start, finished_at=datetime.now(timezone.utc).isoformat())
    atomic_write_json(rdir / RESULT, result)
    return {"run_id": rid, "status": result["status"], "reason": result.get("reason"),
            "wall_time_s": result["wall_time_s"]}


def _params(run: RunConfig) -> Any:
    return parse(METHODS.get(run.method.name).Params, run.method.params, "method.params")
