"""End to end through the engine: spec -> executor -> results store, resume, determinism, failures."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import yaml
from conftest import tiny_spec_dict

from bench.cli import main
from bench.results import load_results, summarize
from bench.store import atomic_write_json, read_json

def write_spec(tmp_path: Path, epochs: int = 2, lr: float = 0.05, name: str = "spec.yaml", **over) -> Path:
    """The tiny spec with two seeds and a 1-pixel crop (see conftest.tiny_spec_dict)."""
    p = tmp_path / name
    over = {"seeds": [0, 1], **over}
    p.write_text(yaml.safe_dump(tiny_spec_dict(train__epochs=epochs, train__optimizer__lr=lr,
                                               train__augment={"crop_padding": 1}, **over)))
    return p


def results(out: Path) -> dict[str, dict]:
    return {p.parent.name: read_json(p) for p in out.glob("tiny/*/result.json")}


def test_run_writes_config_metrics_artifacts_and_provenance(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["run", str(write_spec(tmp_path)), "--out", str(out), "--no-progress"]) == 0
    res = results(out)
    assert len(res) == 2
    for rid, r in res.items():
        rdir = out / "tiny" / rid
        assert r["status"] == "done" and r["run_id"] == rid
        assert r["git_sha"] and r["versions"]["torch"] and r["device"]["device"] == "cpu"
        assert r["wall_time_s"] > 0 and 0.0 <= r["metrics"]["test_acc"] <= 1.0
        assert json.loads((rdir / "config.json").read_text())["train"]["epochs"] == 2
        lines = (rdir / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
        assert (rdir / "artifacts" / "test_logits.pt").is_file()
    df = load_results(out)
    assert len(df) == 2 and set(df["method"]) == {"naive"}
    s = summarize(df)
    assert int(s["n"].iloc[0]) == 2


def test_rerun_of_finished_spec_skips_every_run(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    spec = write_spec(tmp_path)
    main(["run", str(spec), "--out", str(out), "--no-progress"])
    before = {rid: r["finished_at"] for rid, r in results(out).items()}
    capsys.readouterr()
    t0 = time.perf_counter()
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert time.perf_counter() - t0 < 5
    assert "2 already done, 0 to run" in capsys.readouterr().out
    assert {rid: r["finished_at"] for rid, r in results(out).items()} == before


def test_same_spec_twice_gives_identical_metrics(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    main(["run", str(spec), "--out", str(tmp_path / "a"), "--no-progress"])
    main(["run", str(spec), "--out", str(tmp_path / "b"), "--no-progress"])
    a, b = results(tmp_path / "a"), results(tmp_path / "b")
    assert a.keys() == b.keys()
    for rid in a:
        assert a[rid]["metrics"] == b[rid]["metrics"]


def test_non_finite_loss_marks_the_run_failed_with_reason(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["run", str(write_spec(tmp_path, lr=1e30)), "--out", str(out), "--no-progress"]) == 1
    for r in results(out).values():
        assert r["status"] == "failed" and "non-finite" in r["reason"]
    capsys.readouterr()
    assert main(["status", str(out / "tiny")]) == 0
    assert "0 done, 2 failed, 0 pending (of 2)" in capsys.readouterr().out


def test_status_counts_pending_runs(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    spec = write_spec(tmp_path)
    main(["run", str(spec), "--out", str(out), "--no-progress", "--set", "seeds=[0]"])
    main(["run", str(spec), "--out", str(out), "--dry-run"])
    # register the two-seed sweep without running it: the sweep manifest is written on run, so use run on a copy
    from bench.spec import load_spec, run_id
    from bench.store import SWEEP
    ids = [run_id(r) for r in load_spec(spec).runs]
    atomic_write_json(out / "tiny" / SWEEP, {"name": "tiny", "runs": ids})
    capsys.readouterr()
    main(["status", str(out)])
    assert "1 done, 0 failed, 1 pending (of 2)" in capsys.readouterr().out


def test_base_stage_is_shared_by_methods_and_computed_once(tmp_path: Path, monkeypatch) -> None:
    import bench.stages
    from bench.method import METHODS, Method, MethodResult, register_method

    if "probe_base" not in METHODS:
        @register_method("probe_base")
        class Probe(Method):
            def run(self, ctx):
                return MethodResult(metrics={"epochs_seen": len(ctx.base_run().history)})

    calls = []
    real_fit = bench.stages.fit
    monkeypatch.setattr(bench.stages, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    spec = write_spec(tmp_path, name="s.yaml", methods=["naive", "probe_base"], seeds=[0])
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert len(calls) == 1
    assert len(list((tmp_path / "out" / "_stages").glob("base-*/done"))) == 1


@pytest.mark.slow
def test_concurrent_processes_compute_a_shared_stage_once(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import time, pathlib
        from bench.stages import shared_stage
        def compute(d):
            with open({str(tmp_path / 'count')!r}, 'a') as f: f.write('x')
            time.sleep(1.0)
            (d / 'out.txt').write_text('ok')
        shared_stage(pathlib.Path({str(tmp_path / 'stages')!r}), 'demo', {{'k': 1}}, compute)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    assert [p.wait(60) for p in procs] == [0, 0]
    assert (tmp_path / "count").read_text() == "x"


@pytest.mark.slow
def test_local_executor_runs_every_run_in_worker_processes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["run", str(write_spec(tmp_path)), "--out", str(out), "--executor", "local", "--workers", "2",
                 "--no-progress"]) == 0
    res = results(out)
    assert len(res) == 2 and all(r["status"] == "done" for r in res.values())
    assert len({r["pid"] for r in res.values()}) == 2  # the two seeds ran in two workers


def test_atomic_write_leaves_no_partial_file_when_interrupted(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "result.json"

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(target, {"a": 1})
    assert not target.exists() and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_run_killed_with_sigkill_resumes_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, epochs=12)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "bench.cli", "run", str(spec), "--out", str(out), "--no-progress",
           "--set", "seeds=[0]"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen_partial = []
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # wait for a few epochs, watching result.json all the while
            for p in out.glob("tiny/*/result.json"):
                if read_json(p) is None:
                    seen_partial.append(p)
            hist = list(out.glob("_stages/base-*/history.jsonl"))
            if hist and len(hist[0].read_text().splitlines()) >= 4:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the run never reached epoch 4")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not seen_partial
    assert not list(out.glob("tiny/*/result.json")), "killed mid-way: no result may exist"
    assert list(out.glob("_stages/base-*/last.pt")), "an epoch checkpoint should exist"
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    resumed = read_json(next(out.glob("tiny/*/result.json")))
    assert resumed["status"] == "done"
    fresh_out = tmp_path / "fresh"
    assert subprocess.run(cmd[:6] + [str(fresh_out)] + cmd[7:], capture_output=True).returncode == 0
    fresh = read_json(next(fresh_out.glob("tiny/*/result.json")))
    assert resumed["metrics"] == fresh["metrics"]
    hist = [json.loads(x) for x in next(out.glob("tiny/*/metrics.jsonl")).read_text().splitlines()]
    assert [h["epoch"] for h in hist] == list(range(1, 13))
