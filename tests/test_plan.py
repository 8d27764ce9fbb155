"""`forgetbench plan` and `--dry-run`: the trainings a sweep triggers, cells against a store, and their cost."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.ids import run_id
from bench.method import Training
from bench.plan import cells, data_sizes, extra_trainings, training_flops, trainings
from bench.spec import build_spec

SPEC = {"name": "p", "seeds": [0, 1, 2], "datasets": [{"name": "digits"}],
        "models": [{"name": "small_cnn", "width": 8}], "methods": ["naive", "kf_inf", {"name": "ensemble", "k": 3}],
        "train": {"epochs": 2}}


def test_an_ensemble_trains_the_base_runs_of_its_members_and_shares_them():
    runs = build_spec(SPEC).runs
    ens0 = next(r for r in runs if r.method.name == "ensemble" and r.seed == 0)
    assert sorted(t.seed for t in extra_trainings(ens0)) == [1, 2]
    distinct = trainings(runs)
    # naive, kf_inf and the ensemble of seeds 0-2 read base runs of seeds 0..4, each trained once
    assert sorted(t.seed for t, _ in distinct.values()) == [0, 1, 2, 3, 4]


def test_dry_run_says_what_else_a_run_trains(tmp_path: Path, capsys):
    import yaml
    spec = tmp_path / "p.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "(also trains seed 1, 2)" in out and "9 runs; 5 distinct trainings" in out


def test_data_sizes_follow_subsets_and_the_validation_hold_out():
    d = {"name": "cifar10", "train_per_class": 500, "test_per_class": 200, "val_fraction": 0.1}
    assert data_sizes(d) == (4500, 500 + 2000, 3, 32, 10)
    assert data_sizes({"name": "cifar100", "classes": [0, 1]})[0] == 2 * 500 - round(1000 * 0.1)


def test_training_cost_is_linear_in_epochs_and_counts_forward_and_backward():
    data = {"name": "cifar10", "train_per_class": 100, "test_per_class": 10, "val_fraction": 0.0}
    model = {"name": "small_cnn", "kwargs": {"width": 8}}
    one = training_flops(Training("base", data, model, 1.0, 0), record_predictions=False)
    two = training_flops(Training("base", data, model, 2.0, 0), record_predictions=False)
    with_eval = training_flops(Training("base", data, model, 1.0, 0), record_predictions=True)
    assert two == pytest.approx(2 * one) and one > 0
    assert with_eval == pytest.approx(one * (3 * 1000 + 100) / (3 * 1000))   # + one forward per test image


def test_cells_report_done_failed_and_missing_seeds():
    runs = [r for r in build_spec(SPEC).runs if r.method.name == "naive"]
    store = pd.DataFrame([{"run_id": run_id(runs[0]), "status": "done", "reason": None},
                          {"run_id": run_id(runs[1]), "status": "failed", "reason": "RuntimeError: out of memory"}])
    (c,) = cells(runs, store)
    assert c.status() == "1/3 seeds done, 1 failed: RuntimeError: out of memory"


def test_plan_prints_cells_and_device_hours_and_rejects_unknown_papers(capsys, tmp_path):
    assert main(["plan", "know", "--device", "h100", "--out", str(tmp_path / "k.yaml")]) == 0
    out = capsys.readouterr().out
    assert "0/5 seeds done" in out and "h100 hours" in out and "total:" in out and (tmp_path / "k.yaml").is_file()
    assert main(["plan", "nosuchpaper"]) == 2
    assert main(["plan", "know", "--device", "tpu"]) == 2
    assert main(["plan", "know:no such table"]) == 2
