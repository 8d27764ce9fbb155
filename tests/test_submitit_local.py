"""submitit executors without a cluster: `submitit-local` (capped, detachable, collected from disk), `debug`,
the `resources:` validation, and `status` for jobs that died without a result."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("submitit")

from bench.cli import main  # noqa: E402
from bench.config import SpecError  # noqa: E402
from bench.slurm import parse_mem_gb, parse_resources, parse_time_min, slurm_executor_params  # noqa: E402
from bench.store import SWEEP, atomic_write_json, read_json  # noqa: E402
from bench.executors.submitit import JOBS, sweep_progress  # noqa: E402
import yaml  # noqa: E402
from conftest import tiny_spec_dict  # noqa: E402

SPEC = yaml.safe_dump(tiny_spec_dict(seeds=[0, 1, 2, 3], train__epochs=1, resources={"time": 10}), sort_keys=False)


def metrics(out: Path) -> dict[str, dict]:
    return {p.parent.name: read_json(p)["metrics"] for p in out.glob("tiny/*/result.json")}


@pytest.mark.slow
def test_submitit_local_capped_detached_then_collected(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    a, b = tmp_path / "a", tmp_path / "b"
    # reference: the debug executor (submitit's in-process executor)
    assert main(["run", str(spec), "--out", str(a), "--executor", "debug", "--no-progress"]) == 0
    # submitit-local, detached: returns at once; 4 run groups dealt into 2 jobs (the cap)
    t0 = time.perf_counter()
    assert main(["run", str(spec), "--out", str(b), "--executor", "submitit-local", "--workers", "2",
                 "--detach", "--no-progress"]) == 0
    assert time.perf_counter() - t0 < 10
    jobs = read_json(b / "tiny" / JOBS)["submissions"]
    assert len(jobs) == 1 and jobs[0]["executor"] == "submitit-local"
    assert [len(j["runs"]) for j in jobs[0]["jobs"]] == [2, 2]
    assert all(Path(j["stdout"]).parent == (b / "tiny" / "_submitit").resolve() for j in jobs[0]["jobs"])
    capsys.readouterr()
    assert main(["status", str(b)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"tiny: \d done, 0 failed, 0 pending \(of 4\); \d running, \d queued", text), text
    assert "submitit-local job" in text and "log: " in text  # the live jobs and their logs
    # running again while the jobs are alive resubmits nothing, waits for them and collects the results
    assert main(["run", str(spec), "--out", str(b), "--executor", "submitit-local", "--no-progress"]) == 0
    assert len(read_json(b / "tiny" / JOBS)["submissions"]) == 1
    assert metrics(b) == metrics(a) and len(metrics(b)) == 4
    capsys.readouterr()
    main(["status", str(b)])
    assert "tiny: 4 done, 0 failed, 0 pending (of 4); 0 running, 0 queued" in capsys.readouterr().out
    logs = "".join(Path(j["stdout"]).read_text() for j in jobs[0]["jobs"])
    assert logs.count("attempt 1") == 2 and logs.count(": done") == 4


def test_status_reports_job_that_died_without_result(tmp_path: Path, capsys) -> None:
    sdir = tmp_path / "out" / "tiny"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    log = sdir / "_submitit" / f"{dead.pid}_0_log.err"
    log.parent.mkdir(parents=True)
    log.write_text("Traceback...\nMemoryError: killed\n")
    atomic_write_json(sdir / SWEEP, {"name": "tiny", "runs": ["aaa", "bbb"]})
    atomic_write_json(sdir / "bbb" / "result.json", {"status": "done"})
    atomic_write_json(sdir / JOBS, {"submissions": [{
        "executor": "submitit-local", "host": __import__("socket").gethostname(), "folder": str(log.parent),
        "jobs": [{"job_id": str(dead.pid), "runs": ["aaa", "bbb"], "stdout": str(log.with_suffix(".out")),
                  "stderr": str(log)}]}]})
    st = sweep_progress(sdir)
    assert (st["done"], st["failed"], st["running"], st["pending"]) == (1, 1, 0, 0)
    assert "ended without a result" in st["failures"][0][1] and "MemoryError" in st["failures"][0][1]
    assert main(["status", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"err: {log}" in out and "1 failed" in out


def test_resources_validation_names_field_value_and_allowed() -> None:
    res = parse_resources({"partition": "debug", "time": "1:30:00", "cpus": 2, "gpus": 1, "mem": "512M",
                           "array_parallelism": 3, "sbatch": {"qos": "high", "exclusive": True},
                           "setup": "module load cuda"})
    assert (res.time_min, res.mem_gb, res.setup) == (90, 0.5, ["module load cuda"])
    p = slurm_executor_params(res, "fb-x")
    assert p["time"] == 90 and p["mem"] == "512M" and p["gpus_per_node"] == 1 and p["array_parallelism"] == 3
    assert p["additional_parameters"] == {"qos": "high", "exclusive": True} and p["partition"] == "debug"
    assert parse_time_min("2-00:00:00") == 2880 and parse_time_min(5) == 5 and parse_mem_gb(2) == 2.0
    for raw, field, needle in [({"cpu": 1}, "resources.cpu", "did you mean 'cpus'"),
                               ({"time": "soon"}, "resources.time", "SLURM time string"),
                               ({"mem": "4Q"}, "resources.mem", "unit K, M, G or T"),
                               ({"cpus": 0}, "resources.cpus", "integer >= 1"),
                               ({"sbatch": {"qos": [1]}}, "resources.sbatch.qos", "a string, a number")]:
        with pytest.raises(SpecError) as e:
            parse_resources(raw)
        assert e.value.path == field and needle in str(e.value)


def test_cli_rejects_detach_for_inline_and_bad_resources(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--detach"]) == 2
    assert "--detach" in capsys.readouterr().err
    spec.write_text(yaml.safe_dump(tiny_spec_dict(resources={"time": -1})))
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--executor", "submitit-local"]) == 2
    assert "resources.time: got -1" in capsys.readouterr().err
