"""The `slurm` executor against a real one-node SLURM cluster (.ci/slurm-up.sh): a job array sweep collected from
disk after --detach, and a preempted job (SIGUSR2 -> submitit checkpoint -> requeue) that resumes from its epoch
checkpoint and ends with the numbers of an uninterrupted run."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("submitit")

from bench.cli import main  # noqa: E402
from bench.slurm import scontrol_job, squeue_states  # noqa: E402
from bench.store import read_json, read_jsonl  # noqa: E402
from bench.executors.submitit import JOBS  # noqa: E402
import yaml  # noqa: E402
from conftest import tiny_spec_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
UP = ROOT / ".ci" / "slurm-up.sh"


def _node_idle() -> bool:
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(s.strip().startswith(("idle", "mixed", "allocated")) for s in out.splitlines())


@pytest.fixture(scope="module")
def slurm() -> None:
    """A live one-node cluster; started with .ci/slurm-up.sh when installed but down; else a skip with the reason."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        pytest.skip("SLURM is not installed (sinfo/sbatch missing): run `bash .ci/slurm-up.sh` as root "
                    "(CI's .ci/run does) to install and start a one-node cluster")
    if not _node_idle():
        proc = subprocess.run(["bash", str(UP)], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not _node_idle():
            pytest.skip(f".ci/slurm-up.sh could not start SLURM (exit {proc.returncode}): "
                        f"{proc.stderr.strip()[-500:]}")


def _cancel(out: Path) -> None:
    for jobs in out.glob(f"*/{JOBS}"):
        ids = {j["job_id"].split("_")[0] for s in read_json(jobs)["submissions"] for j in s["jobs"]}
        if ids:
            subprocess.run(["scancel", *sorted(ids)], capture_output=True)


def _wait(cond, timeout: float, what: str, every: float = 0.3):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


SWEEP = yaml.safe_dump(tiny_spec_dict(name="sl", seeds=[0, 1, 2, 3], resources={
    "partition": "debug", "time": 10, "cpus": 1, "mem": "1G", "array_parallelism": 4}), sort_keys=False)


def test_slurm_array_sweep_detached_then_collected(slurm, tmp_path: Path, capsys, one_torch_thread) -> None:
    spec = tmp_path / "sl.yaml"
    spec.write_text(SWEEP)
    out = tmp_path / "out"
    try:
        t0 = time.perf_counter()
        assert main(["run", str(spec), "--out", str(out), "--executor", "slurm", "--detach", "--no-progress"]) == 0
        assert time.perf_counter() - t0 < 15
        sub = read_json(out / "sl" / JOBS)["submissions"]
        assert len(sub) == 1 and sub[0]["executor"] == "slurm"
        ids = [j["job_id"] for j in sub[0]["jobs"]]
        array = ids[0].split("_")[0]
        assert ids == [f"{array}_{i}" for i in range(4)]  # one array, one task per run group
        assert all(Path(j["stdout"]).parent == (out / "sl" / "_submitit").resolve() for j in sub[0]["jobs"])
        capsys.readouterr()
        assert main(["status", str(out)]) == 0
        text = capsys.readouterr().out
        assert re.search(r"sl: \d done, 0 failed, 0 pending \(of 4\); \d running, \d queued", text), text
        # a second `run` resubmits nothing: it waits for the array and collects the results from disk
        t1 = time.perf_counter()
        assert main(["run", str(spec), "--out", str(out), "--executor", "slurm", "--no-progress"]) == 0
        print(f"slurm: submit {t1 - t0:.1f} s, collect {time.perf_counter() - t1:.1f} s")
        assert len(read_json(out / "sl" / JOBS)["submissions"]) == 1
        res = {p.parent.name: read_json(p) for p in out.glob("sl/*/result.json")}
        assert len(res) == 4 and all(r["status"] == "done" for r in res.values())
        capsys.readouterr()
        main(["status", str(out)])
        assert "sl: 4 done, 0 failed, 0 pending (of 4); 0 running, 0 queued" in capsys.readouterr().out
        for j in sub[0]["jobs"]:
            assert "attempt 1 (SLURM_RESTART_COUNT=0)" in Path(j["stdout"]).read_text()
        # same numbers as the inline executor (same thread count)
        ref = tmp_path / "ref"
        assert main(["run", str(spec), "--out", str(ref), "--no-progress"]) == 0
        for rid, r in res.items():
            assert read_json(ref / "sl" / rid / "result.json")["metrics"] == r["metrics"]
    finally:
        _cancel(out)


PREEMPT = yaml.safe_dump(tiny_spec_dict(name="pre", models=[{"name": "small_cnn", "width": 32}], train__epochs=8,
                                       train__batch_size=8, train__optimizer__lr=0.02,
                                       resources={"time": 60, "cpus": 1}), sort_keys=False)


def test_preempted_slurm_job_is_requeued_and_resumes_from_its_checkpoint(slurm, tmp_path: Path, one_torch_thread
                                                                         ) -> None:
    spec = tmp_path / "pre.yaml"
    spec.write_text(PREEMPT)
    out = tmp_path / "out"
    try:
        assert main(["run", str(spec), "--out", str(out), "--executor", "slurm", "--detach", "--no-progress"]) == 0
        job = read_json(out / "pre" / JOBS)["submissions"][0]["jobs"][0]
        jid, rid = job["job_id"], job["runs"][0]
        hist = _wait(lambda: next(iter(out.glob("_stages/base-*/history.jsonl")), None), 120, "the base stage")
        _wait(lambda: len(read_jsonl(hist)) >= 2 and (hist.parent / "last.pt").is_file(), 120, "2 epochs")
        before = read_jsonl(hist)
        # preemption: SLURM signals the job (SIGUSR2, as --signal does before a time limit / on preemption)
        subprocess.run(["scancel", "--signal=USR2", jid], check=True)
        # submitit's handler calls RunsJob.checkpoint() and requeues the job (`scontrol requeue`)
        _wait(lambda: int(scontrol_job(jid).get("Restarts", "0")) >= 1, 60, "the requeue")

        def restarted_or_nudged() -> bool:
            state, reason = squeue_states([jid]).get(jid, ("", ""))
            if state == "PENDING" and reason == "BeginTime":  # SLURM holds requeued jobs ~2 min: start it now
                subprocess.run(["scontrol", "update", f"jobid={jid}", "StartTime=now"], capture_output=True)
            return (out / "pre" / rid / "result.json").is_file()

        _wait(restarted_or_nudged, 180, "the requeued job to finish", every=1.0)
        result = read_json(out / "pre" / rid / "result.json")
        assert result["status"] == "done", result
        log = Path(job["stdout"]).read_text()
        assert "attempt 1 (SLURM_RESTART_COUNT=0)" in log and "attempt 2 (SLURM_RESTART_COUNT=1)" in log, log
        assert "checkpoint after attempt 1" in log
        k = int(re.search(r"resuming after epoch (\d+)", log).group(1))
        assert k >= len(before) >= 2
        after = read_jsonl(hist)
        assert [h["epoch"] for h in after] == list(range(1, 9))
        assert after[:len(before)] == before  # earlier epochs kept as written (epoch_time_s too), not recomputed
        # the uninterrupted run gives the same numbers
        ref = tmp_path / "ref"
        assert main(["run", str(spec), "--out", str(ref), "--no-progress"]) == 0
        ref_hist = read_jsonl(next(ref.glob("_stages/base-*/history.jsonl")))
        strip = lambda rows: [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in rows]  # noqa: E731
        assert strip(after) == strip(ref_hist)
        assert read_json(ref / "pre" / rid / "result.json")["metrics"] == result["metrics"]
        print(json.dumps({"resumed_after_epoch": k, "test_acc": result["metrics"]["test_acc"]}))
    finally:
        _cancel(out)
