"""`forgetbench check`: targets written from a run pass, a perturbed method fails naming it (exit 1), bad targets
files exit 2 with a message naming the field (no traceback)."""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from bench.cli import main
from bench.method import METHODS, load_methods

SPEC = textwrap.dedent("""\
    name: gate_tiny
    seeds: [0, 1]
    device: cpu
    datasets:
      - {name: digits, val_fraction: 0.1, noise: {kind: symmetric, rate: 0.4}}
    models:
      - {name: small_cnn, width: 8}
    methods: [naive, kf_inf]
    train:
      epochs: 4
      batch_size: 64
      optimizer: {name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 5.0e-4}
      schedule: {name: constant}
      augment: {crop_padding: 0, flip: false}
    """)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A tiny digits sweep (naive + kf_inf, 2 seeds, 4 epochs, inline) and targets written from it."""
    d = tmp_path_factory.mktemp("gate")
    spec, targets, out = d / "gate_tiny.yaml", d / "targets.yaml", d / "out"
    spec.write_text(SPEC)
    # runs are deterministic in-process: a zero seed-spread multiplier and a tiny floor make any move fail
    targets.write_text("tolerance: {abs_floor: 0.001, k: 0.0}\n")
    assert main(["check", str(spec), "--targets", str(targets), "--out", str(out), "--update-targets",
                 "--no-progress"]) == 0
    return spec, targets, out


def _check(spec, targets, out, *extra) -> int:
    return main(["check", str(spec), "--targets", str(targets), "--out", str(out), "--no-progress", *extra])


def test_update_then_check_passes(baseline, tmp_path, capsys):
    spec, targets, out = baseline
    t = yaml.safe_load(targets.read_text())
    assert {(e["method"], e["metric"]) for e in t["targets"]} == {("naive", "test_acc"), ("kf_inf", "test_acc")}
    assert t["generated"]["git_sha"] and t["generated"]["versions"]["torch"] and t["generated"]["machine"]["cpu_count"]
    assert t["tolerance"] == {"abs_floor": 0.001, "k": 0.0}
    junit, md = tmp_path / "junit.xml", tmp_path / "summary.md"
    assert _check(spec, targets, out, "--junit", str(junit), "--markdown", str(md)) == 0
    text = capsys.readouterr().out
    assert "4 already done" in text and "2 pass, 0 fail" in text
    assert junit.read_text().count("<testcase ") == 2 and 'failures="0"' in junit.read_text()
    assert "**PASS**" in md.read_text()


def test_perturbed_method_fails_naming_it(baseline, tmp_path, monkeypatch, capsys):
    """A KF that returns the final model (the naive result) makes the gate exit 1, naming kf_inf."""
    spec, targets, out = baseline
    t = {(e["method"]): e["mean"] for e in yaml.safe_load(targets.read_text())["targets"]}
    assert abs(t["kf_inf"] - t["naive"]) > 0.001, "precondition: KF differs from the final model in this setting"
    out2 = tmp_path / "out"
    shutil.copytree(out, out2)
    for res in (out2 / "gate_tiny").glob("*/result.json"):      # rerun only kf_inf (the base stage is reused)
        if yaml.safe_load(res.read_text())["config"]["method"]["name"] == "kf_inf":
            shutil.rmtree(res.parent)
    load_methods()
    kf = METHODS.get("kf_inf")
    monkeypatch.setattr(kf, "run", lambda self, ctx: METHODS.get("naive").run(self, ctx))
    junit = tmp_path / "junit.xml"
    assert _check(spec, targets, out2, "--junit", str(junit)) == 1
    cap = capsys.readouterr()
    fail = [line for line in cap.err.splitlines() if line.startswith("FAIL")]
    assert len(fail) == 1 and "kf_inf test_acc" in fail[0] and "tolerance ±0.0010" in fail[0]
    assert "from git" in fail[0] and f"{t['naive']:.4f}" in fail[0]
    assert "1 pass, 1 fail" in cap.out
    assert 'failures="1"' in junit.read_text() and "kf_inf" in junit.read_text()


def test_moved_target_and_missing_row_fail(baseline, tmp_path, capsys):
    spec, targets, out = baseline
    t = yaml.safe_load(targets.read_text())
    for e in t["targets"]:
        if e["method"] == "naive":
            e["mean"] += 0.05
    t["targets"].append({"setting": "digits/small_cnn", "method": "naive", "metric": "no_such_metric", "mean": 1.0,
                         "std": 0.0})
    moved = tmp_path / "moved.yaml"
    moved.write_text(yaml.safe_dump(t))
    assert _check(spec, moved, out) == 1
    err = capsys.readouterr().err
    assert "naive test_acc" in err and "Δ -0.0500" in err
    assert "naive no_such_metric" in err and "missing" in err


@pytest.mark.parametrize("content,field", [
    ("targets:\n  - {setting: s, method: naive, metric: test_acc, mean: abc, std: 0.1}\n", "targets[0].mean"),
    ("targets:\n  - {setting: s, method: naive, mean: 0.5}\n", "targets[0].metric"),
    ("tolerance: {abs_floor: -1}\ntargets: []\n", "tolerance.abs_floor"),
    ("tolerances: {}\n", "tolerances"),
    ("targets: [1, 2\n", "not valid YAML"),
])
def test_malformed_targets_exit_2(baseline, tmp_path, capsys, content, field):
    spec, _, out = baseline
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    assert _check(spec, bad, out) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err


def test_missing_targets_file_exit_2(baseline, tmp_path, capsys):
    spec, _, out = baseline
    assert _check(spec, tmp_path / "nope.yaml", out) == 2
    assert "no such targets file" in capsys.readouterr().err


def test_smoke_sweep_covers_every_method_and_demo_is_a_subset():
    """sweeps/ci_smoke.yaml runs every registered method on >= 2 seeds; sweeps/demo.yaml's runs are among its runs."""
    from bench.spec import load_spec, run_id
    root = Path(__file__).resolve().parents[1] / "sweeps"
    load_methods()
    smoke = load_spec(root / "ci_smoke.yaml")
    assert {r.method.name for r in smoke.runs} == set(METHODS.names())
    assert len({r.seed for r in smoke.runs}) >= 2
    demo = load_spec(root / "demo.yaml")
    assert {run_id(r) for r in demo.runs} <= {run_id(r) for r in smoke.runs}


def test_update_keeps_tolerance_and_metrics_and_pins_the_supported_verdicts(baseline, tmp_path):
    spec, targets, out = baseline
    t = tmp_path / "t.yaml"
    t.write_text("tolerance: {abs_floor: 0.01, k: 3}\nmetric_tolerance: {test_acc: {abs_floor: 0.02}}\n"
                 "metrics: {default: [test_acc, test_loss]}\nverdicts: {some_claim: supported}\n")
    assert _check(spec, t, out, "--update-targets") == 0
    got = yaml.safe_load(t.read_text())
    assert got["tolerance"] == {"abs_floor": 0.01, "k": 3.0}
    assert got["metric_tolerance"] == {"test_acc": {"abs_floor": 0.02}}
    # the verdicts section is rewritten from the claims engine: the (claim, setting) pairs supported now
    assert isinstance(got["verdicts"], list) and all(v["verdict"] == "supported" for v in got["verdicts"])
    # kf_inf belongs to a paper (headline metric test_acc); naive too: `default` is for methods outside papers
    assert {e["metric"] for e in got["targets"]} == {"test_acc"}
