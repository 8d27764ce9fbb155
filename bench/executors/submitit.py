"""submitit executors: `slurm` (a job array), `submitit-local` (N capped local jobs) and `debug` (in-process).

Each job is a `RunsJob`: a list of run groups (runs sharing a base stage, see `bench.executors.group_runs`)
executed one after another through `bench.runner.execute_run`. It is a `submitit.helpers.Checkpointable`: when
SLURM signals the job (time limit or preemption, SIGUSR2), `checkpoint()` returns a `DelayedSubmission` of the job
itself and submitit requeues it. Nothing else needs saving: finished runs have their `result.json` (skipped on
restart) and the base stage resumes from its per-epoch `last.pt`, so the requeued job continues where it stopped,
under the same run ids, with the same numbers.

Every submission is appended to `RESULTS/<spec>/jobs.json` (job ids, runs, log paths); submitit's pickles and
logs live in `RESULTS/<spec>/_submitit/`. `--detach` returns right after submitting; `forgetbench status`
reads the store and the job records later (`sweep_progress`).
"""
from __future__ import annotations

import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from bench.config import RunConfig, SpecError
from bench.executors.base import EXECUTORS, group_runs, pinned_threads, run_threads
from bench.slurm import ACTIVE_STATES, parse_resources, slurm_executor_params, squeue_states
from bench.ids import run_id
from bench.store import RESULT, SWEEP, atomic_write_json, read_json, read_jsonl, run_state
from bench.runner import execute_run
from bench.device import resolve_device
from bench.stages import DONE, base_key, stage_dir
from bench.slurm import available

try:
    import submitit
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # the `slurm` extra is not installed: the executors say so when constructed
    submitit = None
    Checkpointable = object  # type: ignore[misc,assignment]
    DelayedSubmission = None  # type: ignore[assignment]

JOBS = "jobs.json"
SUBMITIT_DIR = "_submitit"
LOG_PREFIX = "[forgetbench]"


# ------------------------------------------------------------------------------------------------ the job
class RunsJob(Checkpointable):
    """One submitted job: run groups executed in order. Requeue-safe (state lives in the results store)."""

    def __init__(self, groups: list[list[RunConfig]], out: str, threads: int | None = None) -> None:
        self.groups, self.out, self.threads = groups, str(out), threads
        self.attempt = 1

    def __call__(self) -> list[dict[str, Any]]:
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        jid = os.environ.get("SLURM_ARRAY_JOB_ID") and \
            f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" \
            or os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or "debug"
        # the submitting process's run_threads(), not the job's cpus: the numbers must not depend on the executor
        with pinned_threads(self.threads):  # restored after: the debug executor runs in the caller's process
            return self._run_all(jid, restarts)

    def _run_all(self, jid: str, restarts: str) -> list[dict[str, Any]]:
        import torch

        runs = [r for g in self.groups for r in g]
        _log(f"job {jid} attempt {self.attempt}" + (f" (SLURM_RESTART_COUNT={restarts})" if "SLURM_JOB_ID" in
                                                     os.environ else "") + f" on {socket.gethostname()}: "
             f"{len(runs)} runs, torch threads {torch.get_num_threads()}, "
             f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}")
        results = []
        for r in runs:
            resumed = _base_progress(r, self.out)
            if resumed:
                _log(f"run {run_id(r)}: base stage has {resumed} finished epochs: resuming after epoch {resumed}")
            res = execute_run(r, self.out, progress=False)
            _log(f"run {res['run_id']}: {res['status']}" + (f" ({res.get('reason')})" if res.get("reason") else ""))
            results.append(res)
        return results

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit on SIGUSR2 (time limit / preemption): requeue this same job (state is on disk)."""
        _log(f"checkpoint after attempt {self.attempt}: requeueing (finished runs are kept, the base stage "
             f"resumes from its last epoch checkpoint)")
        self.attempt += 1
        return DelayedSubmission(self, *args, **kwargs)


def _log(msg: str) -> None:
    print(f"{LOG_PREFIX} {datetime.now().strftime('%H:%M:%S')} {msg}", flush=True)


def _base_progress(run: RunConfig, out: str) -> int:
    """Finished epochs recorded in the run's (unfinished) base stage with a resumable checkpoint, else 0."""
    try:
        from types import SimpleNamespace

        sdir = stage_dir(Path(out) / "_stages", "base",
                         base_key(SimpleNamespace(config=run, device=resolve_device(run.device))))
        if (sdir / DONE).is_file() or not (sdir / "last.pt").is_file():
            return 0
        return max((int(h.get("epoch", 0)) for h in read_jsonl(sdir / "history.jsonl")), default=0)
    except Exception:  # informational only
        return 0


# ------------------------------------------------------------------------------------------ the executors
class _SubmititExecutor:
    kind = ""

    def __init__(self, workers: int = 2, resources: dict | None = None, *, detach: bool = False,
                 poll_s: float = 1.0, **_: Any) -> None:
        if submitit is None:
            raise SpecError("--executor", self.kind, "an executor whose package is installed: submitit is missing "
                            "(pip install -e '.[slurm]'), or inline | local")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise SpecError("--workers", workers, "an integer >= 1")
        self.workers = workers
        self.res = parse_resources(resources or {})
        self.detach = detach
        self.poll_s = poll_s

    # -- to override
    def make_executor(self, folder: Path, job_name: str = "") -> Any:
        """The submitit executor for these resources, its logs and pickles in `folder`."""
        raise NotImplementedError

    def _payloads(self, groups: list[list[RunConfig]], out: Path) -> list[RunsJob]:
        return [RunsJob([g], str(out), threads=run_threads()) for g in groups]

    def submit(self, ex: Any, payloads: list[Any]) -> list[Any]:
        """Submit callables (one job each; one array on SLURM)."""
        with ex.batch():
            jobs = [ex.submit(p) for p in payloads]
        return jobs

    def wait_ended(self, record: dict[str, Any], poll_s: float | None = None) -> None:
        """Block until every job of a submission record has ended (queued and running jobs are waited for)."""
        while any(state in ("running", "queued") for state in job_states(record).values()):
            time.sleep(self.poll_s if poll_s is None else poll_s)

    # -- shared
    def run(self, runs: list[RunConfig], out: Path, *, progress: bool = True) -> list[dict[str, Any]]:
        """Submit the runs not already in a live job; then (unless detached) wait for those and the in-flight
        ones, collecting results from the store."""
        if not runs:
            return []
        out = Path(out).resolve()
        sdir = out / runs[0].spec
        folder = sdir / SUBMITIT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        busy = in_flight_runs(sdir) if self.kind != "debug" else {}
        todo = [r for r in runs if run_id(r) not in busy]
        for rid, info in busy.items():
            print(f"{rid}: already in {info['executor']} job {info['job_id']} ({info['state']}); not resubmitted",
                  file=sys.stderr)
        watch: dict[str, tuple[dict, dict]] = {}
        subs = load_jobs(sdir)
        for rid, info in busy.items():
            rec = subs[info["record"]]
            watch[rid] = (rec, next(j for j in rec["jobs"] if j["job_id"] == info["job_id"]))
        jobs: list[Any] = []
        record: dict[str, Any] | None = None
        if todo:
            for r in todo:  # a failed attempt is retried: its old result must not be read as the new one
                old = sdir / run_id(r) / RESULT
                if (read_json(old) or {}).get("status") == "failed":
                    old.unlink()
            payloads = self._payloads(group_runs(todo), out)
            jobs = self.submit(self.make_executor(folder), payloads)
            record = submission_record(self.kind, jobs, [[run_id(r) for g in p.groups for r in g] for p in payloads],
                                       folder)
            append_submission(sdir, record)
            ids = [j["job_id"] for j in record["jobs"]]
            print(f"submitted {len(todo)} runs as {len(ids)} {self.kind} job(s): {_compact(ids)}; "
                  f"logs in {folder}", flush=True)
            for job in record["jobs"]:
                for rid in job["runs"]:
                    watch[rid] = (record, job)
        if self.detach:
            print(f"detached: follow with `forgetbench status {sdir}`; results are collected from disk", flush=True)
            return [{"run_id": rid, "status": "submitted" if rid not in busy else "in-flight", "reason": None,
                     "wall_time_s": 0.0} for rid in watch]
        try:
            return self._wait(jobs, watch, sdir, progress)
        except KeyboardInterrupt:
            if self.kind == "slurm":
                print(f"\ninterrupted: the jobs keep running; follow with `forgetbench status {sdir}`",
                      file=sys.stderr)
            raise

    def _wait(self, jobs: list[Any], watch: dict[str, tuple[dict, dict]], sdir: Path, progress: bool
              ) -> list[dict[str, Any]]:
        """Poll the store (and the job states) until every watched run has a result or its job is gone."""
        pending = dict(watch)
        records = {id(rec): rec for rec, _ in watch.values()}
        results: list[dict[str, Any]] = []
        last_post: dict[str, int] = {}
        with tqdm(total=len(pending), desc=f"runs ({self.kind})", unit="run", disable=not progress) as bar:
            while pending:
                for job in jobs:  # our own children (submitit-local): poll them, which also reaps the finished
                    if hasattr(job, "_process"):
                        job.get_info()
                states: dict[str, str] = {}
                if any(_final_result(sdir, rid) is None for rid in pending):
                    for rec in records.values():
                        states.update(job_states(rec))
                for rid in list(pending):
                    rec, job = pending[rid]
                    res = _final_result(sdir, rid)
                    if res is None and states.get(job["job_id"]) == "ended":
                        res = _final_result(sdir, rid)  # written just before the job ended?
                        if res is None:
                            res = {"status": "failed", "wall_time_s": None,
                                   "reason": f"{rec['executor']} job {job['job_id']} ended without a result "
                                             f"({_job_error(job)}); log: {job['stderr']}"}
                    if res is not None:
                        results.append({"run_id": rid, "status": res["status"], "reason": res.get("reason"),
                                        "wall_time_s": res.get("wall_time_s")})
                        del pending[rid]
                        bar.update(1)
                if pending:
                    post = {"failed": sum(r["status"] == "failed" for r in results),
                            "jobs_running": sum(s == "running" for s in states.values()),
                            "jobs_queued": sum(s == "queued" for s in states.values())}
                    if post != last_post:
                        bar.set_postfix(post)
                        last_post = post
                    time.sleep(self.poll_s)
        return results


@EXECUTORS.register("slurm")
class SlurmExecutor(_SubmititExecutor):
    """One SLURM array job per sweep (one task per run group), `resources:` as sbatch options."""
    kind = "slurm"

    def __init__(self, workers: int = 2, resources: dict | None = None, **kw: Any) -> None:
        super().__init__(workers, resources, **kw)
        if not available():
            raise SpecError("--executor", "slurm", "an executor that can run here: the SLURM client commands "
                            "(sbatch, squeue, srun) are missing; start a one-node cluster with "
                            "`sudo bash .ci/slurm-up.sh`, or use submitit-local")

    def make_executor(self, folder: Path, job_name: str = "") -> Any:
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=self.res.max_timeouts)
        ex.update_parameters(**slurm_executor_params(self.res, job_name=job_name or f"fb-{folder.parent.name}"))
        return ex


@EXECUTORS.register("submitit-local")
class SubmititLocalExecutor(_SubmititExecutor):
    """submitit's local executor, capped at N = --workers concurrent jobs (submitit alone would start every job
    at once): the run groups are dealt round-robin into N jobs. With GPUs, job i sees only GPU i mod #GPUs
    (CUDA_VISIBLE_DEVICES). Jobs survive the submitting process (--detach)."""
    kind = "submitit-local"

    def make_executor(self, folder: Path, job_name: str = "") -> Any:
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=self.res.max_timeouts)
        ex.update_parameters(timeout_min=self.res.time_min, signal_delay_s=self.res.signal_delay_s,
                             **({"setup": list(self.res.setup)} if self.res.setup else {}))
        return ex

    def _payloads(self, groups: list[list[RunConfig]], out: Path) -> list[RunsJob]:
        n = min(self.workers, len(groups))
        threads = run_threads()
        return [RunsJob([g for i, g in enumerate(groups) if i % n == k], str(out), threads=threads)
                for k in range(n)]

    def submit(self, ex: Any, payloads: list[Any]) -> list[Any]:
        gpus = _gpu_count()
        jobs = []
        for k, p in enumerate(payloads):
            if gpus:
                ex.update_parameters(visible_gpus=(k % gpus,), gpus_per_node=1)
            jobs.append(ex.submit(p))
        return jobs


@EXECUTORS.register("debug")
class DebugExecutor(_SubmititExecutor):
    """submitit's debug executor: the jobs run in this process when collected (set breakpoints; pdb on errors)."""
    kind = "debug"

    def make_executor(self, folder: Path, job_name: str = "") -> Any:
        return submitit.DebugExecutor(folder=folder)

    def submit(self, ex: Any, payloads: list[Any]) -> list[Any]:
        return [ex.submit(p) for p in payloads]

    def _wait(self, jobs: list[Any], watch: dict, sdir: Path, progress: bool) -> list[dict[str, Any]]:
        results = []
        for job in tqdm(jobs, desc="jobs (debug)", unit="job", disable=not progress):
            results.extend(job.result())
        return results

    def run(self, runs: list[RunConfig], out: Path, *, progress: bool = True) -> list[dict[str, Any]]:
        if self.detach:
            raise SpecError("--detach", True, "only with --executor slurm or submitit-local (debug runs in-process)")
        return super().run(runs, out, progress=progress)


def _gpu_count() -> int:
    try:
        import torch
        return torch.cuda.device_count()
    except Exception:
        return 0


def _compact(ids: list[str]) -> str:
    arrays = sorted({i.split("_")[0] for i in ids if "_" in i})
    if arrays and all("_" in i for i in ids):
        return ", ".join(f"{a}_[0-{sum(i.startswith(a + '_') for i in ids) - 1}]" for a in arrays)
    return ", ".join(ids)


def _final_result(sdir: Path, rid: str) -> dict | None:
    res = read_json(sdir / rid / RESULT)
    return res if isinstance(res, dict) and res.get("status") in ("done", "failed") else None


def _job_error(job: dict) -> str:
    """The last error line of a job's submitit log, or a hint."""
    try:
        lines = [ln for ln in Path(job["stderr"]).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln or "CANCELLED" in ln or "Killed" in ln:
            return ln.strip()[-300:]
    return lines[-1].strip()[-300:] if lines else "empty log"


# ------------------------------------------------------------------------------------------ job records
def load_jobs(sdir: Path) -> list[dict[str, Any]]:
    return (read_json(Path(sdir) / JOBS) or {}).get("submissions", [])


def append_submission(sdir: Path, record: dict) -> None:
    """Add one submission record to `sdir`/jobs.json (what `forgetbench status` reads)."""
    subs = load_jobs(sdir)
    subs.append(record)
    atomic_write_json(Path(sdir) / JOBS, {"submissions": subs})


def submission_record(kind: str, jobs: list[Any], runs: list[list[str]], folder: Path) -> dict[str, Any]:
    """The record of one submission: executor, time, host, folder, and per job its id, runs and log paths."""
    entries = [{"job_id": str(job.job_id), "runs": list(r), "stdout": str(job.paths.stdout),
                "stderr": str(job.paths.stderr)} for job, r in zip(jobs, runs)]
    return {"executor": kind, "submitted_at": datetime.now(timezone.utc).isoformat(), "host": socket.gethostname(),
            "folder": str(folder), "jobs": entries}


def job_states(record: dict) -> dict[str, str]:
    """{job id: running | queued | ended | unknown} for the jobs of one submission record."""
    kind, ids = record.get("executor"), [j["job_id"] for j in record.get("jobs", [])]
    if kind == "slurm":
        try:
            sq = squeue_states(ids)
        except RuntimeError:
            return dict.fromkeys(ids, "unknown")
        out = {}
        for jid in ids:
            state = sq.get(jid, ("", ""))[0]
            if not state:
                out[jid] = "ended"
            elif state in ("RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT"):
                out[jid] = "running"
            elif state in ACTIVE_STATES:
                out[jid] = "queued"
            else:
                out[jid] = "ended"
        return out
    if kind == "submitit-local":
        if record.get("host") != socket.gethostname():
            return dict.fromkeys(ids, "unknown")
        return {jid: ("running" if _pid_alive(int(jid)) else "ended") for jid in ids}
    return dict.fromkeys(ids, "ended")


def _pid_alive(pid: int) -> bool:
    """A live (non-zombie) submitit controller process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and b"submitit" in cmd


def in_flight_runs(sdir: Path) -> dict[str, dict[str, Any]]:
    """Runs without a final result whose job is still queued or running:
    {run id: {job_id, state, executor, record (index in jobs.json)}}."""
    out: dict[str, dict[str, Any]] = {}
    for i, rec in enumerate(load_jobs(sdir)):
        if not any(_final_result(sdir, rid) is None for job in rec.get("jobs", []) for rid in job["runs"]):
            continue
        live = {j: s for j, s in job_states(rec).items() if s in ("running", "queued")}
        for job in rec.get("jobs", []):
            if job["job_id"] in live:
                for rid in job["runs"]:
                    if _final_result(sdir, rid) is None:
                        out[rid] = {"job_id": job["job_id"], "state": live[job["job_id"]],
                                    "executor": rec.get("executor", ""), "record": i}
    return out


def sweep_progress(sdir: Path) -> dict[str, Any]:
    """Per-run status of one spec folder across executors: done / failed / running / queued / pending.

    Runs without a result are `running` or `queued` when the latest job that holds them is alive (running means
    the job has started the run), `failed` when that job ended without writing a result (killed, out of
    memory, out of requeues), else `pending`. Also the jobs worth a look (failed or running) with log paths.
    """
    sdir = Path(sdir)
    sweep = read_json(sdir / SWEEP) or {}
    rids = list(sweep.get("runs", []))
    subs = load_jobs(sdir)
    latest: dict[str, tuple[dict, dict]] = {}
    for rec in subs:
        for job in rec.get("jobs", []):
            for rid in job["runs"]:
                latest[rid] = (rec, job)
    states: dict[tuple[int, str], str] = {}
    for i, rec in enumerate(subs):  # the scheduler is asked only about records with unfinished runs
        if any(rid in rids and latest.get(rid, (None,))[0] is rec and _final_result(sdir, rid) is None
               for job in rec["jobs"] for rid in job["runs"]):
            for jid, st in job_states(rec).items():
                states[(i, jid)] = st
    counts = dict.fromkeys(("done", "failed", "running", "queued", "interrupted", "pending"), 0)
    failures: list[tuple[str, str]] = []
    jobs_of_interest: dict[str, dict[str, Any]] = {}
    for rid in rids:
        res = read_json(sdir / rid / RESULT)
        rec, job = latest.get(rid, (None, None))
        jstate = states.get((subs.index(rec), job["job_id"])) if rec is not None else None
        if res and res.get("status") == "done":
            counts["done"] += 1
            continue
        if res and res.get("status") == "failed" and jstate not in ("running", "queued"):
            counts["failed"] += 1
            failures.append((rid, res.get("reason", "")))
            if job:
                jobs_of_interest.setdefault(job["job_id"], {**job, "state": "a run failed",
                                                            "executor": rec["executor"]})
            continue
        if jstate in ("running", "queued"):
            started = (sdir / rid / "config.json").is_file() and jstate == "running"
            counts["running" if started else "queued"] += 1
            if jstate == "running":
                jobs_of_interest.setdefault(job["job_id"], {**job, "state": jstate, "executor": rec["executor"]})
        elif jstate == "ended":
            counts["failed"] += 1
            failures.append((rid, f"{rec['executor']} job {job['job_id']} ended without a result ({_job_error(job)})"))
            jobs_of_interest[job["job_id"]] = {**job, "state": "ended without result", "executor": rec["executor"]}
        else:  # no live job: running under a local executor (running.json, live pid), interrupted, or pending
            counts[run_state(sdir / rid) or "pending"] += 1
    return {"spec": sweep.get("name", sdir.name), "total": len(rids), **counts, "failures": failures,
            "jobs": list(jobs_of_interest.values()), "submissions": len(subs)}
