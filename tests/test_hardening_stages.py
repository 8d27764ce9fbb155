"""Issue 15, bullets 2 and 3: stages survive any kill; one run, one writer.

Tiny digits sweeps (small_cnn width 8, 2 epochs): a stage killed inside its finalisation window, a truncated or
corrupt stage file, a torn history line all end in the same numbers as an uninterrupted run (the stage is
discarded and recomputed with a StageDiscarded warning); two concurrent `forgetbench run` processes execute each
run exactly once; a SIGKILLed local sweep resumes to identical results; a full or read-only store ends the sweep
with one message and nothing half-written.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

import bench.stages
import yaml
from conftest import tiny_spec_dict

from bench.cli import main
from bench.stages import DONE, PredictionRecorder, StageDiscarded
from bench.store import CONFIG, METRICS, RESULT, RUN_LOCK, is_running, read_json

ROOT = Path(__file__).resolve().parents[1]


class Killed(BaseException):
    """Stands in for SIGKILL inside one process: nothing below the raise runs, nothing catches it."""


def write_spec(folder: Path, seeds: str = "[0]", epochs: int = 2) -> Path:
    p = folder / "spec.yaml"
    p.write_text(yaml.safe_dump(tiny_spec_dict(seeds=yaml.safe_load(seeds), train__epochs=epochs,
                                               train__augment={"crop_padding": 1})))
    return p


def run(spec: Path, out: Path, *extra: str) -> int:
    return main(["run", str(spec), "--out", str(out), "--no-progress", *extra])


def results(out: Path) -> dict[str, dict]:
    return {p.parent.name: read_json(p) for p in out.glob("tiny/*/result.json")}


def metrics_of(out: Path) -> dict[str, dict]:
    res = results(out)
    assert res and all(r["status"] == "done" for r in res.values()), res
    return {rid: r["metrics"] for rid, r in res.items()}


def base_dir(out: Path) -> Path:
    (sdir,) = out.glob("_stages/base-*/")
    return sdir


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """An uninterrupted one-run store (the stage and the run's result) and its metrics."""
    folder = tmp_path_factory.mktemp("reference")
    out = folder / "out"
    assert run(write_spec(folder), out) == 0
    return out, metrics_of(out)


def copy_store(reference, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    return out


def rerun_run(tmp_path: Path, out: Path) -> None:
    """Forget the run's result (the stage stays) and run the spec again."""
    for p in out.glob(f"tiny/*/{RESULT}"):
        p.unlink()
    assert run(write_spec(tmp_path), out) == 0


def kill_before_done(monkeypatch) -> None:
    """Make the stage's `done` write die: the stage stops right after its finalisation (consolidated files,
    final.pt, timing.json written), the kill window of the issue."""
    real = bench.stages.atomic_write_json

    def write(path, obj):
        if Path(path).name == DONE:
            raise Killed
        real(path, obj)
    monkeypatch.setattr(bench.stages, "atomic_write_json", write)


# ------------------------------------------------------------------------------------ the kill window
def killed_before_done(tmp_path: Path, monkeypatch) -> tuple[Path, Path, Path]:
    """A tiny sweep killed after its base stage's files are final but before `done`: (out, spec, stage dir)."""
    out, spec = tmp_path / "out", write_spec(tmp_path)
    with monkeypatch.context() as m:
        kill_before_done(m)
        with pytest.raises(Killed):
            run(spec, out)
    return out, spec, base_dir(out)


@pytest.mark.parametrize("per_epoch_files", ["kept", "deleted"])
def test_kill_in_the_finalisation_window_reruns_to_the_same_numbers(tmp_path, monkeypatch, reference,
                                                                    per_epoch_files) -> None:
    out, spec, sdir = killed_before_done(tmp_path, monkeypatch)
    assert not (sdir / DONE).exists() and (sdir / "last.pt").is_file()
    assert (sdir / "preds" / "test.pt").is_file() and (sdir / "final.pt").is_file()
    assert list((sdir / "preds").glob("epoch_*.pt")), "per-epoch files are deleted only after `done`"
    if per_epoch_files == "deleted":  # what the old order left behind: consolidated, per-epoch files gone
        for p in (sdir / "preds").glob("epoch_*.pt"):
            p.unlink()
    assert run(spec, out) == 0
    assert metrics_of(out) == reference[1]
    assert (sdir / DONE).is_file()
    assert not list((sdir / "preds").glob("epoch_*.pt")) and not (sdir / "last.pt").exists()  # cleaned after done


SIGKILL_AT_DONE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import bench.stages as S
    real = S.atomic_write_json

    def write(path, obj):  # a real SIGKILL at the last step of the stage's finalisation
        if Path(path).name == S.DONE:
            os.kill(os.getpid(), signal.SIGKILL)
        real(path, obj)
    S.atomic_write_json = write
    from bench.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_real_sigkill_inside_the_finalisation_window_reruns_to_the_same_numbers(tmp_path, reference) -> None:
    out, spec = tmp_path / "out", write_spec(tmp_path)
    proc = subprocess.run([sys.executable, "-c", SIGKILL_AT_DONE, "run", str(spec), "--out", str(out),
                           "--no-progress"], env=_env(), capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    sdir = base_dir(out)
    assert not (sdir / DONE).exists() and (sdir / "final.pt").is_file() and not results(out)
    assert run(spec, out) == 0
    assert metrics_of(out) == reference[1]


def test_consolidate_is_idempotent_and_tolerates_per_epoch_files_already_gone(tmp_path) -> None:
    rec = PredictionRecorder(tmp_path, {"val": [1, 2], "test": [1, 2, 3]}, batch_size=8)
    for e in (1, 2):
        torch.save({"val": torch.rand(2, 4).half(), "test": torch.rand(3, 4).half()}, tmp_path / f"epoch_{e:04d}.pt")
    rec.consolidate(2)
    first = torch.load(tmp_path / "test.pt", weights_only=True)
    rec.consolidate(2)  # again, per-epoch files still there
    for p in tmp_path.glob("epoch_*.pt"):
        p.unlink()
    rec.consolidate(2)  # again, per-epoch files gone: the consolidated files are kept
    assert torch.equal(torch.load(tmp_path / "test.pt", weights_only=True), first) and first.shape == (2, 3, 4)
    (tmp_path / "val.pt").unlink()
    with pytest.raises(bench.stages.StageCorrupt, match="epoch_0001.pt is missing"):
        rec.consolidate(2)


# -------------------------------------------------------------------------------- unreadable stage files
def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


CORRUPTIONS = {
    "final.pt truncated": lambda s: _truncate(s / "final.pt"),
    "final.pt empty": lambda s: (s / "final.pt").write_bytes(b""),
    "final.pt not a state dict": lambda s: torch.save([1, 2], s / "final.pt"),
    "preds/test.pt truncated": lambda s: _truncate(s / "preds" / "test.pt"),
    "preds/val.pt empty": lambda s: (s / "preds" / "val.pt").write_bytes(b""),
    "preds/test.pt wrong shape": lambda s: torch.save(torch.zeros(1, 5, 10), s / "preds" / "test.pt"),
    "ckpt missing": lambda s: (s / "ckpt" / "epoch_0001.pt").unlink(),
    "timing.json invalid": lambda s: (s / "timing.json").write_text("{"),
    "done empty": lambda s: (s / DONE).write_text(""),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_unreadable_stage_file_is_discarded_and_recomputed(tmp_path, reference, corruption) -> None:
    out = copy_store(reference, tmp_path)
    CORRUPTIONS[corruption](base_dir(out))
    with pytest.warns(StageDiscarded, match="recomputed"):
        rerun_run(tmp_path, out)
    assert metrics_of(out) == reference[1]
    with warnings.catch_warnings():  # and the recomputed stage is clean
        warnings.simplefilter("error", StageDiscarded)
        rerun_run(tmp_path, out)


@pytest.mark.parametrize("damage", ["torn line", "invalid line", "line missing"])
def test_bad_history_of_a_finished_stage_is_recomputed_with_the_right_epoch_count(tmp_path, reference,
                                                                                  damage) -> None:
    out = copy_store(reference, tmp_path)
    hist = base_dir(out) / "history.jsonl"
    lines = hist.read_text().splitlines()
    if damage == "torn line":
        lines[0] = lines[0][: len(lines[0]) // 2]
    elif damage == "invalid line":
        lines[0] = "[1, 2]"
    else:
        lines = lines[:1]
    hist.write_text("\n".join(lines) + "\n")
    with pytest.warns(StageDiscarded, match="history.jsonl"):
        rerun_run(tmp_path, out)
    (res,) = results(out).values()
    assert res["metrics"]["epochs"] == 2 and metrics_of(out) == reference[1]
    (metrics,) = out.glob(f"tiny/*/{METRICS}")
    assert [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize("what", ["last.pt truncated", "last.pt empty", "last.pt not a state",
                                  "per-epoch preds truncated", "history torn"])
def test_unreadable_resume_files_restart_the_stage(tmp_path, monkeypatch, reference, what) -> None:
    out, spec, sdir = killed_before_done(tmp_path, monkeypatch)
    if what == "last.pt truncated":
        _truncate(sdir / "last.pt")
    elif what == "last.pt empty":
        (sdir / "last.pt").write_bytes(b"")
    elif what == "last.pt not a state":
        torch.save({"epoch": 99}, sdir / "last.pt")
    elif what == "per-epoch preds truncated":
        _truncate(sdir / "preds" / "epoch_0001.pt")
        (sdir / "preds" / "test.pt").unlink()
    else:
        (sdir / "history.jsonl").write_text('{"epoch": 1, "train_lo\n')
    with pytest.warns(StageDiscarded, match="training from scratch"):
        assert run(spec, out) == 0
    assert metrics_of(out) == reference[1]


def test_resume_checkpoint_loads_with_weights_only(tmp_path, monkeypatch) -> None:
    _, _, sdir = killed_before_done(tmp_path, monkeypatch)
    state = torch.load(sdir / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and set(state) == {"epoch", "model", "optimizer", "scheduler"}


# --------------------------------------------------------------------------------- one run, one writer
COUNTING_CLI = textwrap.dedent("""
    import os, sys
    import bench.runner as R

    class Counting(R.RunContext):  # one line per executed run (a RunContext is made once per execution)
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            with open(os.environ["FB_COUNTER"], "a") as f:
                f.write(f"{self.run_dir.name} {os.getpid()}\\n")
    R.RunContext = Counting
    from bench.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}
    env.setdefault("FORGETBENCH_THREADS", "1")
    return env


@pytest.mark.slow
def test_two_concurrent_run_processes_execute_every_run_exactly_once(tmp_path) -> None:
    spec, out, counter = write_spec(tmp_path, seeds="[0, 1, 2, 3, 4]", epochs=1), tmp_path / "out", tmp_path / "n"
    cmd = [sys.executable, "-c", COUNTING_CLI, "run", str(spec), "--out", str(out), "--no-progress"]
    procs = [subprocess.Popen(cmd, env=_env(FB_COUNTER=str(counter)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("Traceback" not in err for _, err in outs), outs
    executed = [line.split()[0] for line in counter.read_text().splitlines()]
    res = results(out)
    assert len(res) == 5 and all(r["status"] == "done" for r in res.values())
    assert sorted(executed) == sorted(res), f"{len(executed)} executions for {len(res)} runs"
    for rid in res:
        epochs = [json.loads(x)["epoch"] for x in (out / "tiny" / rid / METRICS).read_text().splitlines()]
        assert epochs == [1], (rid, epochs)
    assert not any(is_running(out / "tiny" / rid) for rid in res)


def test_a_run_whose_lock_is_held_is_skipped_not_redone(tmp_path) -> None:
    from filelock import FileLock

    from bench.runner import execute_run
    from bench.spec import load_spec
    (r,) = load_spec(write_spec(tmp_path, epochs=1)).runs
    out = tmp_path / "out"
    from bench.ids import run_id
    rdir = out / "tiny" / run_id(r)
    rdir.mkdir(parents=True)
    held = FileLock(str(rdir / RUN_LOCK))
    code = f"import time; from filelock import FileLock; l = FileLock({str(rdir / RUN_LOCK)!r}); l.acquire(); " \
           f"print('held', flush=True); time.sleep(30)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert is_running(rdir)
        assert execute_run(r, out, progress=False)["status"] == "running"
        assert not (rdir / RESULT).exists() and not (rdir / METRICS).exists()
    finally:
        holder.kill()
        holder.wait()
    assert not is_running(rdir)
    assert execute_run(r, out, progress=False)["status"] == "done"
    assert execute_run(r, out, progress=False)["status"] == "skipped"
    del held


@pytest.mark.slow
def test_sigkill_at_a_random_point_of_a_local_sweep_resumes_to_identical_results(tmp_path) -> None:
    spec = write_spec(tmp_path, seeds="[0, 1, 2, 3]", epochs=2)
    cmd = [sys.executable, "-m", "bench.cli", "run", str(spec), "--executor", "local", "--workers", "2",
           "--no-progress", "--out"]
    fresh, killed = tmp_path / "fresh", tmp_path / "killed"
    assert subprocess.run(cmd + [str(fresh)], env=_env(), capture_output=True, timeout=300).returncode == 0
    delay = random.Random(os.getpid()).uniform(3.0, 9.0)
    proc = subprocess.Popen(cmd + [str(killed)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group: the workers die with it
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    rerun = subprocess.run(cmd + [str(killed)], env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, (delay, rerun.stderr[-2000:])
    assert metrics_of(killed) == metrics_of(fresh), f"killed after {delay:.1f} s"
    for rid in results(killed):
        epochs = [json.loads(x)["epoch"] for x in (killed / "tiny" / rid / METRICS).read_text().splitlines()]
        assert epochs == [1, 2]


# ------------------------------------------------------------------------------ a store that cannot be written
def _leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_result_write_error_stops_the_sweep_with_one_message(tmp_path, monkeypatch, capsys, code) -> None:
    import bench.runner
    out = tmp_path / "out"
    real = bench.runner.atomic_write_json

    def write(path, obj):
        if Path(path).name == RESULT:
            raise OSError(code, os.strerror(code), str(path))
        real(path, obj)
    monkeypatch.setattr(bench.runner, "atomic_write_json", write)
    capsys.readouterr()
    rc = run(write_spec(tmp_path, seeds="[0, 1]", epochs=1), out)
    err = capsys.readouterr().err
    assert rc not in (0, None) and "Traceback" not in err
    assert os.strerror(code) in err and "results store" in err
    assert not list(out.glob(f"tiny/*/{RESULT}")), "the run stays pending"
    assert len(list(out.glob(f"tiny/*/{CONFIG}"))) == 1, "the sweep stopped at the first run"
    assert not _leftovers(out)


def test_disk_full_inside_a_method_stops_the_sweep_instead_of_failing_the_run(tmp_path, monkeypatch,
                                                                              capsys) -> None:
    import bench.method

    def log(self, row):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.run_dir / METRICS))
    monkeypatch.setattr(bench.method.RunContext, "log", log)
    out = tmp_path / "out"
    rc = run(write_spec(tmp_path, epochs=1), out)
    err = capsys.readouterr().err
    assert rc not in (0, None) and "No space left on device" in err and "Traceback" not in err
    assert not list(out.glob(f"tiny/*/{RESULT}")) and not _leftovers(out)
