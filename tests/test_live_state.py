"""Interrupts, live state and provenance (issue 15, bullets 7 and 8).

- `forgetbench status` counts a run as running when its running.json names a live process of this host, as
  interrupted when it names a dead one (a fake running.json: os.getpid() alive, a reaped child dead).
- SIGTERM / Ctrl-C on a `--executor local` sweep: the workers stop, exit code 143 / 130, one line saying how many
  runs finished, no leaked semaphores, and rerunning resumes (finished runs skipped, all done after).
- Each result records whether the tree was dirty and the hash of its diff; `status` / `run` warn when one sweep's
  finished runs come from different code versions, and the report says it per table.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main as cli_main
from bench.store import RUNNING, run_state, sweep_status

SHA = "0123456789abcdef0123456789abcdef01234567"


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _result(spec: str, rid: str, *, sha: str = SHA, diff: str | None = None, status: str = "done") -> dict:
    return {"run_id": rid, "spec": spec, "status": status, "git_sha": sha + ("-dirty" if diff else ""),
            "git_dirty": bool(diff), "git_diff_hash": diff,
            "config": {"spec": spec, "seed": int(rid[-1]), "device": "cpu",
                       "dataset": {"name": "digits", "noise": {"kind": "none", "rate": 0.0}},
                       "model": {"name": "small_cnn", "kwargs": {}}, "method": {"name": "naive", "params": {}},
                       "train": {"epochs": 2}},
            "metrics": {"test_acc": 0.9 + 0.01 * int(rid[-1])}, "device": {"device": "cpu", "host": "h"},
            "data": {"note": "digits", "n_train": 10, "n_val": 2, "n_test": 5}, "wall_time_s": 1.0}


def _sweep(root: Path, spec: str, runs: dict[str, dict | None]) -> Path:
    sdir = root / spec
    sdir.mkdir(parents=True)
    for rid, res in runs.items():
        (sdir / rid).mkdir()
        if res is not None:
            (sdir / rid / "result.json").write_text(json.dumps(res))
    (sdir / "sweep.json").write_text(json.dumps({"name": spec, "runs": list(runs)}))
    return sdir


def test_status_running_and_interrupted_from_running_json(tmp_path, capsys):
    sdir = _sweep(tmp_path, "live", {"run0": _result("live", "run0"), "run1": None, "run2": None, "run3": None,
                                     "run4": None})
    host = socket.gethostname()
    (sdir / "run1" / RUNNING).write_text(json.dumps({"pid": os.getpid(), "host": host}))       # alive: this test
    (sdir / "run2" / RUNNING).write_text(json.dumps({"pid": _dead_pid(), "host": host}))       # dead: killed
    (sdir / "run3" / RUNNING).write_text(json.dumps({"pid": os.getpid(), "host": host,          # pid reused
                                                     "proc_start": 1}))
    assert run_state(sdir / "run1") == "running"
    assert run_state(sdir / "run2") == "interrupted"
    assert run_state(sdir / "run3") == "interrupted"
    assert run_state(sdir / "run4") is None
    st = sweep_status(sdir)
    assert (st["done"], st["running"], st["interrupted"], st["pending"], st["total"]) == (1, 1, 2, 1, 5)
    for extra in ([], ["--no-jobs"]):  # through the job-aware status (sweep_progress) and without it
        assert cli_main(["status", str(tmp_path), *extra]) == 0
        out = capsys.readouterr().out
        assert "live: 1 done, 0 failed, 1 running, 2 interrupted (rerun to resume), 1 pending (of 5)" in out, out


def test_runner_writes_and_removes_running_json(tmp_path, monkeypatch):
    """While a run executes its folder holds running.json (pid, host, started_at); once result.json is written
    it is gone, and the result records the code version (dirty flag, diff hash)."""
    import bench.runner as runner
    from bench.method import METHODS
    from bench.spec import load_spec
    spec_file = tmp_path / "one.yaml"
    spec_file.write_text("name: one\nseeds: [0]\ndevice: cpu\ndatasets: [{name: digits, val_fraction: 0.1}]\n"
                         "models: [{name: small_cnn, width: 4}]\nmethods: [naive]\n"
                         "train: {epochs: 1, batch_size: 256}\n")
    run = load_spec(spec_file, []).runs[0]
    seen = {}
    real = METHODS.get

    def spy(name):
        cls = real(name)

        class Spy(cls):
            def run(self, ctx):
                seen.update(json.loads((ctx.run_dir / RUNNING).read_text()))
                seen["state"] = run_state(ctx.run_dir)
                return super().run(ctx)
        return Spy
    monkeypatch.setattr(METHODS, "get", spy)
    out = runner.execute_run(run, tmp_path / "store", progress=False)
    assert out["status"] == "done", out
    assert seen["pid"] == os.getpid() and seen["host"] == socket.gethostname() and seen["started_at"]
    assert seen["state"] == "running"
    rdir = next((tmp_path / "store" / "one").iterdir())
    assert not (rdir / RUNNING).exists()
    res = json.loads((rdir / "result.json").read_text())
    assert "git_dirty" in res and "git_diff_hash" in res
    assert (res["git_diff_hash"] is not None) == bool(res["git_dirty"])


def test_git_state_hashes_the_diff():
    from bench.provenance import git_state
    st = git_state()
    assert set(st) == {"git_dirty", "git_diff_hash"}
    if st["git_dirty"]:
        assert len(st["git_diff_hash"]) == 16 and int(st["git_diff_hash"], 16) >= 0


def test_mixed_code_versions_warned_by_status_and_report(tmp_path, capsys):
    from bench.provenance import code_versions, mixed_versions_warning
    same = [_result("same", "r0"), _result("same", "r1")]
    mixed = [_result("mixed", "r0"), _result("mixed", "r1", diff="aaaa1111bbbb2222"),
             _result("mixed", "r2", sha="f" * 40), _result("mixed", "r3", sha="e" * 40, status="failed")]
    assert mixed_versions_warning("same", same) is None
    assert len(code_versions(mixed)) == 3  # finished runs only: the failed one does not count
    assert mixed_versions_warning("mixed", mixed).startswith("warning: mixed: the finished runs come from 3 code")
    # the same sha with two different diffs is two versions; the same diff hash is one
    assert len(code_versions([_result("d", "r0", diff="1" * 16), _result("d", "r1", diff="2" * 16)])) == 2
    assert len(code_versions([_result("d", "r0", diff="1" * 16), _result("d", "r1", diff="1" * 16)])) == 1

    _sweep(tmp_path / "store", "same", {r["run_id"]: r for r in same})
    _sweep(tmp_path / "store", "mixed", {r["run_id"]: r for r in mixed})
    assert cli_main(["status", str(tmp_path / "store"), "--no-jobs"]) == 0
    err = capsys.readouterr().err
    assert "warning: mixed: the finished runs come from 3 code versions" in err
    assert "warning: same" not in err
    out = tmp_path / "report"
    assert cli_main(["report", str(tmp_path / "store"), "--out", str(out)]) == 0
    md = (out / "index.md").read_text()
    assert "*WARNING: these 3 finished runs come from 3 code versions" in md      # the generic table of `mixed`
    assert f"*Code version: {SHA} (all 2 finished runs).*" in md                # ... and of `same`
    assert "(diff aaaa1111bbbb)" in md
    assert '<p class="warn">WARNING: these 3 finished runs' in (out / "index.html").read_text()


# ------------------------------------------------------------------------------------------- interrupts
SPEC = """name: intr
seeds: [0, 1, 2]
device: cpu
datasets: [{name: digits, val_fraction: 0.1}]
models: [{name: small_cnn, width: 8}]
methods: [naive]
train: {epochs: 15, batch_size: 64}
grid:
  dataset.noise: [{kind: none, rate: 0.0}, {kind: symmetric, rate: 0.2}]
"""


def _cli() -> list[str]:
    return [sys.executable, "-m", "bench.cli"]


def _finished(sdir: Path) -> int:
    n = 0
    for p in sdir.glob("*/result.json"):
        try:
            n += json.loads(p.read_text()).get("status") in ("done", "failed")
        except ValueError:
            pass
    return n


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.slow
def test_signal_stops_a_local_sweep_cleanly_and_rerun_resumes(tmp_path, sig):
    spec = tmp_path / "intr.yaml"
    spec.write_text(SPEC)
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # the resource tracker's leak warnings stay visible
    proc = subprocess.Popen([*_cli(), "run", str(spec), "--out", str(store), "--executor", "local",
                             "--workers", "2", "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    sdir = store / "intr"
    deadline = time.time() + 240
    while _finished(sdir) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    assert _finished(sdir) >= 1, "no run finished in time"
    time.sleep(0.3)  # the workers are inside their next runs
    workers = {json.loads(p.read_text())["pid"] for p in sdir.glob(f"*/{RUNNING}")}
    if sig == signal.SIGINT:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground process group
    else:
        proc.send_signal(signal.SIGTERM)  # `kill PID`: the parent only
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), (out, err)
    name = "SIGINT" if sig == signal.SIGINT else "SIGTERM"
    lines = [ln for ln in err.splitlines() if ln.startswith("interrupted")]
    assert len(lines) == 1 and lines[0].startswith(f"interrupted ({name}): ") and "of 6 runs finished" in lines[0]
    assert "rerun the same command to resume" in lines[0]
    assert "Traceback" not in err and "leaked semaphore" not in err, err
    deadline = time.time() + 20
    from bench.store import pid_alive
    while any(pid_alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in workers), "a worker outlived the sweep"
    finished = _finished(sdir)
    st = sweep_status(sdir)
    assert st["done"] == finished and st["running"] == 0
    assert st["done"] + st["interrupted"] + st["pending"] == 6 and st["done"] < 6
    assert st["interrupted"] >= 1  # a worker was inside a run when it was stopped
    # rerun: resumes, skipping what finished
    r = subprocess.run([*_cli(), "run", str(spec), "--out", str(store), "--executor", "local", "--workers", "2",
                        "--no-progress"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"{finished} already done, {6 - finished} to run" in r.stdout
    st = sweep_status(sdir)
    assert (st["done"], st["interrupted"], st["pending"]) == (6, 0, 0)
    assert not list(sdir.glob(f"*/{RUNNING}"))
