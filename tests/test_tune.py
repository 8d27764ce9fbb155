"""`forgetbench tune`: validation of the `tune:` section, 2 parallel workers on one study (exactly n_trials,
distinct numbers, pruning), dead workers' trials marked FAIL, and the test split never read."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from bench.cli import main  # noqa: E402
from bench.config import SpecError  # noqa: E402
from bench.store import read_json  # noqa: E402
from bench.tune.config import STALE, parse_tune  # noqa: E402
from bench.tune.study import make_storage  # noqa: E402
from bench.tune.workers import counted, reap_stale, worker_identity  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SPEC = """
name: tt
seeds: [0]
datasets: [{{name: digits, val_fraction: 0.1}}]
models: [{{name: small_cnn, width: 8}}]
methods: [naive]
train:
  epochs: {epochs}
  batch_size: 64
  optimizer: {{name: sgd, lr: 0.05, momentum: 0.9}}
tune:
  params:
    train.optimizer.lr: {{type: float, low: 1.0e-4, high: 0.3, log: true}}
  metric: val_acc
  n_trials: {n}
  workers: {workers}
  sampler: {{name: tpe, seed: 0, n_startup_trials: 4, multivariate: false, constant_liar: true}}
  pruner: {{name: median, n_startup_trials: 1, n_warmup_steps: 0}}
"""


def write(tmp_path: Path, epochs: int = 3, n: int = 8, workers: int = 2) -> Path:
    p = tmp_path / "tt.yaml"
    p.write_text(SPEC.format(epochs=epochs, n=n, workers=workers))
    return p


def test_installed_optuna_matches_the_pin() -> None:
    pin = [d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["tune"]
           if d.startswith("optuna")][0]
    assert pin == "optuna>=4.0,<5"
    assert int(optuna.__version__.split(".")[0]) == 4, f"optuna {optuna.__version__} installed despite {pin}"


@pytest.mark.slow
def test_two_workers_share_one_study_exact_trials_and_pruning(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["tune", str(write(tmp_path)), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    info = read_json(out / "tt" / "tune" / "tune.json")
    assert info["storage"].startswith("journal:")  # several workers: not sqlite
    study = optuna.load_study(study_name="tt", storage=make_storage(info["storage"]))
    trials = study.get_trials()
    assert len(trials) == 8 and sorted(t.number for t in trials) == list(range(8))  # none lost, none duplicated
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2  # two processes shared the study
    TS = optuna.trial.TrialState
    assert all(t.state in (TS.COMPLETE, TS.PRUNED) for t in trials)
    pruned = [t for t in trials if t.state == TS.PRUNED]
    assert pruned and all(max(t.intermediate_values) < 3 for t in pruned)  # stopped before the last epoch
    assert all(sorted(t.intermediate_values) == [1, 2, 3] for t in trials if t.state == TS.COMPLETE)
    best = read_json(out / "tt" / "tune" / "best.json")
    assert best["best_value"] == max(t.value for t in trials if t.state == TS.COMPLETE)
    assert best["set"] == [f"train.optimizer.lr={json.dumps(best['best_params']['train.optimizer.lr'])}"]
    assert "best trial" in text and "--set train.optimizer.lr=" in text
    capsys.readouterr()
    main(["status", str(out)])
    assert re.search(r"tune tt: .*8/8 trials", capsys.readouterr().out)


class _Poison:
    def __getattr__(self, name):
        raise AssertionError(f"tuning read the test split (.{name})")

    def __len__(self):
        raise AssertionError("tuning read the test split (len)")


def test_dead_worker_trials_are_failed_and_replaced_and_test_split_unread(tmp_path: Path, monkeypatch) -> None:
    import bench.data
    import bench.tune.objective
    real = bench.data.load_splits
    monkeypatch.setattr(bench.tune.objective, "_SPLITS", {})

    def no_test(cfg, **kw):
        s = real(cfg, **kw)
        s.test = _Poison()
        return s
    monkeypatch.setattr(bench.tune.objective, "load_splits", no_test)
    out = tmp_path / "out"
    spec = write(tmp_path, epochs=1, n=2, workers=1)
    cfg = parse_tune({"params": {"train.optimizer.lr": {"type": "float", "low": 0.01, "high": 0.1}}}, "tt", out)
    assert cfg.storage.startswith("sqlite:///")  # one worker: a local SQLite file in the results dir
    # a trial left RUNNING by a worker that was killed
    storage = make_storage(cfg.storage)
    study = optuna.create_study(study_name="tt", storage=storage, direction="maximize")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    t = study.ask()
    t.set_user_attr("worker", {**worker_identity(), "pid": dead.pid, "start": "1"})
    alive = study.ask()
    alive.set_user_attr("worker", worker_identity())  # this process: alive, left alone
    assert reap_stale(study, storage) == [t.number]
    TS = optuna.trial.TrialState
    frozen = {x.number: x for x in study.get_trials()}
    assert frozen[t.number].state == TS.FAIL and STALE in frozen[t.number].user_attrs
    assert frozen[alive.number].state == TS.RUNNING
    study.tell(alive, 0.5)
    # tune tops the study up to n_trials=2 counted trials (the stale one does not count)
    assert main(["tune", str(spec), "--out", str(out)]) == 0
    trials = optuna.load_study(study_name="tt", storage=make_storage(cfg.storage)).get_trials()
    assert counted(trials) == 2 and len(trials) == 3
    assert [x.state for x in trials] == [TS.FAIL, TS.COMPLETE, TS.COMPLETE]


@pytest.mark.parametrize("tune,path,needle", [
    ({}, "tune", "params"),
    ({"params": {"train.optimizer.lr": {"type": "floatt", "low": 0.1, "high": 1}}},
     "tune.params.train.optimizer.lr.type", "float, int, categorical"),
    ({"params": {"train.optimizer.lr": {"type": "float", "low": 0.3, "high": 0.1}}},
     "tune.params.train.optimizer.lr.high", "> low"),
    ({"params": {"train.optimizer.lr": {"type": "float", "low": 0, "high": 0.1, "log": True}}},
     "tune.params.train.optimizer.lr.low", "> 0 with log"),
    ({"params": {"method.params.x": {"type": "int", "low": 1, "high": 3}}}, "tune.params.method.params.x",
     "method parameters are not tuned"),
    ({"params": {"trian.epochs": {"type": "int", "low": 1, "high": 3}}}, "tune.params.trian.epochs",
     "did you mean 'train'"),
    ({"params": {"train.epochs": {"type": "int", "low": 1, "high": 3}}, "metric": "test_acc"}, "tune.metric",
     "never reads the test split"),
    ({"params": {"train.epochs": {"type": "int", "low": 1, "high": 3}}, "sampler": {"name": "tpe", "sed": 1}},
     "tune.sampler.sed", "seed"),
    ({"params": {"train.epochs": {"type": "int", "low": 1, "high": 3}}, "pruner": {"name": "hyperband"}},
     "tune.pruner.name", "median"),
    ({"params": {"train.epochs": {"type": "int", "low": 1, "high": 3}}, "workers": 2,
      "storage": "sqlite:///x.db"}, "tune.storage", "SQLite is for one process"),
    ({"params": {"train.epochs": {"type": "int", "low": 1, "high": 3}}, "storage": "x.db"}, "tune.storage",
     "journal:PATH"),
    ({"params": {"train.epochs": {"type": "int", "low": 1, "high": 3}}, "n_trial": 3}, "tune.n_trial",
     "did you mean 'n_trials'"),
])
def test_tune_section_errors_name_field_value_and_allowed(tmp_path: Path, tune, path, needle) -> None:
    with pytest.raises(SpecError) as e:
        parse_tune(tune, "tt", tmp_path)
    assert e.value.path == path and needle in str(e.value)


def test_tune_cli_bad_range_exits_2(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "tt.yaml"
    spec.write_text(SPEC.format(epochs=1, n=1, workers=1).replace("low: 1.0e-4, high: 0.3, log: true",
                                                                   "low: -1.0, high: 0.3"))
    assert main(["tune", str(spec), "--out", str(tmp_path / "o")]) == 2
    assert "tune.params.train.optimizer.lr" in capsys.readouterr().err


@pytest.mark.slow
def test_submitit_local_tune_workers_go_through_the_submitit_executor(tmp_path: Path) -> None:
    """Tune workers are submitted, recorded (tune/jobs.json, as a sweep's jobs) and waited for by the submitit
    executor's own pieces."""
    import yaml
    from conftest import tiny_spec_dict
    spec = tmp_path / "tt.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict(name="tt", train__epochs=1, tune={
        "params": {"train.optimizer.lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True}},
        "n_trials": 2, "workers": 2, "executor": "submitit-local", "sampler": {"name": "random", "seed": 0}})))
    out = tmp_path / "out"
    assert main(["tune", str(spec), "--out", str(out), "--no-progress"]) == 0
    (sub,) = read_json(out / "tt" / "tune" / "jobs.json")["submissions"]
    assert sub["executor"] == "submitit-local" and len(sub["jobs"]) == 2
    assert read_json(out / "tt" / "tune" / "best.json")["best_params"]
