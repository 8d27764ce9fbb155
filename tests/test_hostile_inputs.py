"""Hostile inputs (issue 15, bullet 5): every malformed spec, override, environment value or store file makes the
CLI exit 2 with one message naming the field, before any run starts: no traceback, a bounded message, nothing
trained, nothing written outside --out, no code run from the input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main

ROOT = Path(__file__).resolve().parents[1]
MAX_MESSAGE = 3000

BASE = """\
name: hostile
seeds: [0]
datasets: [{name: digits, train_per_class: 20, test_per_class: 10}]
models: [{name: small_cnn, width: 8}]
methods: [naive]
train: {epochs: 1, batch_size: 32}
"""


def sub(old: str, new: str, base: str = BASE) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


def data(extra: str) -> str:
    return sub("{name: digits, train_per_class: 20, test_per_class: 10}", "{name: digits, " + extra + "}")


def model(text: str) -> str:
    return sub("[{name: small_cnn, width: 8}]", f"[{text}]")


def train(extra: str) -> str:
    return sub("{epochs: 1, batch_size: 32}", "{epochs: 1, batch_size: 32, " + extra + "}")


BOMB = "\n".join(["name: hostile", "methods: [naive]",
                  'description: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'] +
                 [f"d{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]) + "\n"
BOMB_IN_GRID = BASE + "grid:\n  train.optimizer.betas: &b0 [[0.9, 0.99], [0.9, 0.99]]\n" + "include:\n" + "\n".join(
    f"  - &i{i} {{train.optimizer.betas: [{', '.join(['*b0' if i == 0 else f'*i{i - 1}'] * 10)}]}}" for i in range(8)) + "\n"
MANY_ALIASES = BASE + "grid:\n  train.optimizer.lr: &lrs [0.1]\n" + \
    "exclude:\n" + "".join(f"  - {{train.optimizer.lr: *lrs}}\n" for _ in range(1100))
DEEP = BASE + "grid:\n  train.optimizer.betas: [" + "[" * 200 + "0.9" + "]" * 200 + "]\n"
VERY_DEEP = "name: hostile\nmethods: [naive]\ngrid: {train.optimizer.betas: [" + "[" * 5000 + "]" * 5000 + "]}\n"
HUGE = BASE + "description: '" + "x" * (1 << 20) + "'\n"
HUGE_KEY = BASE + "? train_" + "x" * 500_000 + "\n: 1\n"
HUGE_VALUE = BASE.replace("name: hostile", "name: '" + "n" * 500_000 + "'")
GRID_10_10 = BASE + "grid:\n" + "".join(
    f"  train.{k}: [{', '.join(str(v + j) for j in range(10))}]\n" for k, v in
    (("batch_size", 1), ("eval_batch_size", 1), ("augment.crop_padding", 0), ("checkpoint_every", 0))) + "".join(
    f"  train.{k}: [{', '.join(str(round(0.01 * (j + 1), 2)) for j in range(10))}]\n" for k in
    ("optimizer.lr", "optimizer.momentum", "optimizer.weight_decay", "schedule.min_lr_ratio", "label_smoothing",
     "schedule.warmup_epochs"))


# (id, spec text or bytes, extra CLI args, environment, substring naming the field)
CASES: list[tuple[str, Any, list[str], dict[str, str], str]] = [
    # ---- names
    ("name-dotdot", sub("name: hostile", "name: '..'"), [], {}, "name"),
    ("name-dot", sub("name: hostile", "name: '.'"), [], {}, "name"),
    ("name-hidden", sub("name: hostile", "name: .hidden"), [], {}, "name"),
    ("name-slash", sub("name: hostile", "name: a/b"), [], {}, "name"),
    ("name-parent-path", sub("name: hostile", "name: ../escape"), [], {}, "name"),
    ("name-absolute", sub("name: hostile", "name: /tmp/escape"), [], {}, "name"),
    ("name-backslash", sub("name: hostile", "name: 'a\\b'"), [], {}, "name"),
    ("name-300-chars", sub("name: hostile", "name: " + "n" * 300), [], {}, "name"),
    ("name-empty", sub("name: hostile", "name: ''"), [], {}, "name"),
    ("name-space", sub("name: hostile", "name: 'my sweep'"), [], {}, "name"),
    ("name-unicode", sub("name: hostile", "name: naïve"), [], {}, "name"),
    ("name-reserved", sub("name: hostile", "name: _stages"), [], {}, "name"),
    ("name-newline", sub("name: hostile", 'name: "a\\nb"'), [], {}, "name"),
    ("name-int", sub("name: hostile", "name: 123"), [], {}, "name"),
    ("name-list", sub("name: hostile", "name: [a]"), [], {}, "name"),
    ("name-nul", sub("name: hostile", 'name: "a\\0b"'), [], {}, "name"),
    ("name-half-mb", HUGE_VALUE, [], {}, "name"),
    # ---- epochs and other integers
    ("epochs-0", sub("epochs: 1", "epochs: 0"), [], {}, "train.epochs"),
    ("epochs-negative", sub("epochs: 1", "epochs: -3"), [], {}, "train.epochs"),
    ("epochs-float", sub("epochs: 1", "epochs: 1.5"), [], {}, "train.epochs"),
    ("batch-size-0", sub("batch_size: 32", "batch_size: 0"), [], {}, "train.batch_size"),
    ("crop-padding-negative", train("augment: {crop_padding: -1}"), [], {}, "train.augment.crop_padding"),
    # ---- non-finite numbers
    ("lr-nan", train("optimizer: {lr: .nan}"), [], {}, "train.optimizer.lr"),
    ("lr-inf", train("optimizer: {lr: .inf}"), [], {}, "train.optimizer.lr"),
    ("lr-nan-string", train("optimizer: {lr: 'nan'}"), [], {}, "train.optimizer.lr"),
    ("lr-inf-string", train("optimizer: {lr: 'inf'}"), [], {}, "train.optimizer.lr"),
    ("lr-overflow", train("optimizer: {lr: 1.0e400}"), [], {}, "train.optimizer.lr"),
    ("lr-huge-int", train("optimizer: {lr: " + "9" * 400 + "}"), [], {}, "train.optimizer.lr"),
    ("weight-decay-nan", train("optimizer: {weight_decay: .nan}"), [], {}, "train.optimizer.weight_decay"),
    ("momentum-nan", train("optimizer: {momentum: .NaN}"), [], {}, "train.optimizer.momentum"),
    ("betas-nan", train("optimizer: {name: adam, betas: [.nan, 0.999]}"), [], {}, "train.optimizer.betas[0]"),
    ("grad-clip-inf", train("grad_clip: .inf"), [], {}, "train.grad_clip"),
    ("warmup-inf", train("schedule: {warmup_epochs: .inf}"), [], {}, "train.schedule.warmup_epochs"),
    ("label-smoothing-neg-inf", train("label_smoothing: -.inf"), [], {}, "train.label_smoothing"),
    ("noise-rate-nan", data("noise: {kind: symmetric, rate: .nan}"), [], {}, "datasets[0].noise.rate"),
    ("val-fraction-nan", data("val_fraction: .nan"), [], {}, "datasets[0].val_fraction"),
    ("grid-lr-nan", BASE + "grid: {train.optimizer.lr: [0.1, .nan]}\n", [], {}, "train.optimizer.lr"),
    # ---- seeds
    ("seed-2-63", sub("seeds: [0]", f"seeds: [{2**63}]"), [], {}, "seeds[0]"),
    ("seed-2-64", sub("seeds: [0]", f"seeds: [{2**64 + 5}]"), [], {}, "seeds[0]"),
    ("seed-negative", sub("seeds: [0]", "seeds: [-1]"), [], {}, "seeds[0]"),
    ("seed-float", sub("seeds: [0]", "seeds: [1.5]"), [], {}, "seeds[0]"),
    ("seed-bool", sub("seeds: [0]", "seeds: [true]"), [], {}, "seeds[0]"),
    ("seeds-string", sub("seeds: [0]", "seeds: abc"), [], {}, "seeds"),
    ("seeds-duplicate", sub("seeds: [0]", "seeds: [3, 3]"), [], {}, "seeds"),
    ("data-seed-2-63", data(f"seed: {2**63}"), [], {}, "datasets[0].seed"),
    ("data-seed-negative", data("seed: -4"), [], {}, "datasets[0].seed"),
    ("include-seed-huge", BASE + f"include: [{{seed: {2**70}}}]\n", [], {}, "seed"),
    ("grid-seed-huge", BASE + f"grid: {{seed: [0, {2**63}]}}\n", [], {}, "seed"),
    # ---- data sizes, classes, paths
    ("val-fraction-0999", data("train_per_class: 10, val_fraction: 0.999"), [], {}, "datasets[0].val_fraction"),
    ("val-fraction-rounds-to-all", data("train_per_class: 2, val_fraction: 0.8"), [], {}, "datasets[0].val_fraction"),
    ("val-fraction-rounds-to-none", data("train_per_class: 3, val_fraction: 0.1"), [], {}, "datasets[0].val_fraction"),
    ("val-fraction-1", data("val_fraction: 1.0"), [], {}, "datasets[0].val_fraction"),
    ("val-fraction-negative", data("val_fraction: -0.1"), [], {}, "datasets[0].val_fraction"),
    ("train-per-class-0", data("train_per_class: 0"), [], {}, "datasets[0].train_per_class"),
    ("train-per-class-fraction-above-1", data("train_per_class: 1.5"), [], {}, "datasets[0].train_per_class"),
    ("test-per-class-negative", data("test_per_class: -2"), [], {}, "datasets[0].test_per_class"),
    ("test-split-1", data("test_split: 1.0"), [], {}, "datasets[0].test_split"),
    ("train-per-class-above-dataset", sub("{name: digits, train_per_class: 20, test_per_class: 10}",
                                          "{name: cifar10, train_per_class: 6000}"), [], {},
     "datasets[0].train_per_class"),
    ("test-per-class-above-dataset", sub("{name: digits, train_per_class: 20, test_per_class: 10}",
                                         "{name: cifar100, test_per_class: 101}"), [], {},
     "datasets[0].test_per_class"),
    ("classes-99", data("classes: [99]"), [], {}, "datasets[0].classes[0]"),
    ("classes-10-of-digits", data("classes: [0, 10]"), [], {}, "datasets[0].classes[1]"),
    ("classes-negative", data("classes: [-1]"), [], {}, "datasets[0].classes[0]"),
    ("classes-empty", data("classes: []"), [], {}, "datasets[0].classes"),
    ("classes-duplicate", data("classes: [1, 1]"), [], {}, "datasets[0].classes"),
    ("classes-string", data("classes: all"), [], {}, "datasets[0].classes"),
    ("classes-float", data("classes: [0.5]"), [], {}, "datasets[0].classes[0]"),
    ("data-root-missing", data("root: /nonexistent/forgetbench/data"), [], {}, "datasets[0].root"),
    ("data-root-empty", data("root: ''"), [], {}, "datasets[0].root"),
    ("grid-classes-out-of-range", BASE + "grid: {dataset.classes: [[0, 1], [7, 12]]}\n", [], {}, "dataset.classes"),
    # ---- models
    ("width-0", model("{name: small_cnn, width: 0}"), [], {}, "models[0].kwargs"),
    ("width-negative", model("{name: small_cnn, width: -3}"), [], {}, "models[0].kwargs"),
    ("depth-0", model("{name: small_cnn, depth: 0}"), [], {}, "models[0].kwargs"),
    ("width-typo", model("{name: small_cnn, widht: 8}"), [], {}, "models[0].kwargs.widht"),
    ("width-float", model("{name: small_cnn, width: 2.5}"), [], {}, "models[0].kwargs.width"),
    ("width-string", model("{name: small_cnn, width: '32'}"), [], {}, "models[0].kwargs.width"),
    ("width-nan", model("{name: small_cnn, width: .nan}"), [], {}, "models[0].kwargs.width"),
    ("harness-arg-as-kwarg", model("{name: small_cnn, num_classes: 3}"), [], {}, "models[0].kwargs.num_classes"),
    ("resnet-width-0", model("{name: resnet18_cifar, width: 0}"), [], {}, "models[0].kwargs"),
    ("resnet-unknown-kwarg", model("{name: resnet18_cifar, depth: 3}"), [], {}, "models[0].kwargs.depth"),
    ("timm-unknown-kwarg", model("{name: 'timm:resnet18', not_a_kwarg: 1}"), [], {}, "models[0].kwargs"),
    ("timm-pretrained", model("{name: 'timm:resnet18', pretrained: true}"), [], {}, "models[0].kwargs"),
    ("hf-dir-missing", model("{name: 'hf:/nonexistent/model-dir'}"), [], {}, "models[0].name"),
    ("tiny-lm-typo", model("{name: tiny_lm, n_layers: 2}"), [], {}, "models[0].kwargs.n_layers"),
    ("tiny-lm-bad-heads", model("{name: tiny_lm, d_model: 64, n_head: 3}"), [], {}, "models[0].kwargs.n_head"),
    ("tiny-lm-zero", model("{name: tiny_lm, d_model: 0}"), [], {}, "models[0].kwargs.d_model"),
    ("grid-width-0", BASE + "grid: {model.kwargs.width: [8, 0]}\n", [], {}, "model.kwargs"),
    ("include-model-typo", BASE + "include: [{model.kwargs.widht: 4}]\n", [], {}, "model.kwargs.widht"),
    # ---- include / exclude / grid keys
    ("exclude-unknown-field", BASE + "exclude: [{train.optimizer.lrr: 0.1}]\n", [], {},
     "exclude[0].train.optimizer.lrr"),
    ("exclude-typo-noise", BASE + "exclude: [{dataset.nosie.rate: 0.2}]\n", [], {},
     "exclude[0].dataset.nosie.rate"),
    ("exclude-unknown-param", BASE + "exclude: [{method.params.window: 2}]\n", [], {},
     "exclude[0].method.params.window"),
    ("exclude-bad-head", BASE + "exclude: [{training.lr: 0.1}]\n", [], {}, "exclude[0].training.lr"),
    ("include-unknown-field", BASE + "include: [{train.foo: 1}]\n", [], {}, "train.foo"),
    ("grid-unknown-field", BASE + "grid: {train.optimizer.foo: [1]}\n", [], {}, "train.optimizer.foo"),
    ("grid-through-scalar", BASE + "grid: {seed.x: [1]}\n", [], {}, "seed.x"),
    # ---- resources and tune, whatever the command
    ("resources-unknown-key", BASE + "resources: {partitionn: debug}\n", [], {}, "resources.partitionn"),
    ("resources-cpus-0", BASE + "resources: {cpus: 0}\n", [], {}, "resources.cpus"),
    ("resources-time", BASE + "resources: {time: soon}\n", [], {}, "resources.time"),
    ("resources-mem", BASE + "resources: {mem: lots}\n", [], {}, "resources.mem"),
    ("resources-list", BASE + "resources: [cpus]\n", [], {}, "resources"),
    ("tune-unknown-key", BASE + "tune: {params: {train.optimizer.lr: {type: float, low: 0.01, high: 0.1}}, "
                                "trials: 5}\n", [], {}, "tune.trials"),
    ("tune-no-params", BASE + "tune: {metric: val_acc}\n", [], {}, "tune.params"),
    ("tune-test-metric", BASE + "tune: {params: {train.optimizer.lr: {type: float, low: 0.01, high: 0.1}}, "
                                "metric: test_acc}\n", [], {}, "tune.metric"),
    ("tune-bad-range", BASE + "tune: {params: {train.optimizer.lr: {type: float, low: 0.1, high: 0.01}}}\n", [], {},
     "tune.params.train.optimizer.lr"),
    ("tune-invalid-run", BASE + "tune: {params: {train.epochs: {type: int, low: 0, high: 3}}}\n", [], {},
     "tune.params.train.epochs"),
    # ---- YAML structure
    ("duplicate-top-key", BASE + "name: other\n", [], {}, "name (line"),
    ("duplicate-nested-key", sub("{epochs: 1, batch_size: 32}", "{epochs: 1, batch_size: 32, epochs: 5}"), [], {},
     "epochs (line"),
    ("billion-laughs", BOMB, [], {}, "<yaml>"),
    ("alias-bomb-in-include", BOMB_IN_GRID, [], {}, "<yaml>"),
    ("recursive-alias", BASE + "grid: &g {train.optimizer.betas: [*g]}\n", [], {}, "<yaml>"),
    ("too-many-aliases", MANY_ALIASES, [], {}, "<yaml>"),
    ("deep-nesting", DEEP, [], {}, "<yaml>"),
    ("very-deep-nesting", VERY_DEEP, [], {}, "<yaml>"),
    ("over-1mb", HUGE, [], {}, "<file>"),
    ("huge-unknown-key", HUGE_KEY, [], {}, "train_xxx"),
    ("not-utf8", BASE.encode() + b"description: caf\xe9\n", [], {}, "<file>"),
    ("utf16", BASE.encode("utf-16"), [], {}, "<file>"),
    ("empty-file", "", [], {}, "<spec>"),
    ("python-tag", BASE + "description: !!python/object/apply:os.system ['touch pwned']\n", [], {}, "<yaml>"),
    ("yaml-syntax", BASE + "grid: {train.optimizer.lr: [0.1\n", [], {}, "<yaml>"),
    ("top-level-list", "- name: hostile\n", [], {}, "<spec>"),
    ("unknown-top-key", BASE + "epochs: 3\n", [], {}, "epochs"),
    ("device-tpu", BASE + "device: tpu\n", [], {}, "device"),
    ("device-int", BASE + "device: 5\n", [], {}, "device"),
    ("description-mapping", BASE + "description: {a: 1}\n", [], {}, "description"),
    # ---- run-count cap (computed before expansion)
    ("grid-10-to-the-10", GRID_10_10, [], {}, "grid"),
    ("run-cap-env", BASE + "grid: {train.optimizer.lr: [0.1, 0.2, 0.3]}\n", [], {"FORGETBENCH_MAX_RUNS": "2"}, "grid"),
    ("run-cap-env-bad", BASE + "grid: {train.optimizer.lr: [0.1, 0.2]}\n", [], {"FORGETBENCH_MAX_RUNS": "many"},
     "FORGETBENCH_MAX_RUNS"),
    # ---- --set
    ("set-list-index", BASE, ["--set", "seeds.0=1"], {}, "--set seeds.0"),
    ("set-empty-part", BASE, ["--set", "a..b=1"], {}, "--set a..b"),
    ("set-empty-key", BASE, ["--set", "=1"], {}, "--set"),
    ("set-leading-dot", BASE, ["--set", ".train=1"], {}, "--set .train"),
    ("set-no-equals", BASE, ["--set", "train.epochs"], {}, "--set"),
    ("set-bad-yaml", BASE, ["--set", "train.epochs=[1"], {}, "--set train.epochs"),
    ("set-epochs-0", BASE, ["--set", "train.epochs=0"], {}, "train.epochs"),
    ("set-name-dotdot", BASE, ["--set", "name=.."], {}, "name"),
    ("set-lr-nan", BASE, ["--set", "train.optimizer.lr=.nan"], {}, "train.optimizer.lr"),
    ("set-through-scalar", BASE, ["--set", "train.epochs.x=1"], {}, "--set train.epochs.x"),
    ("set-python-tag", BASE, ["--set", "description=!!python/object/apply:os.system [touch pwned]"], {},
     "--set description"),
    ("set-on-list-spec", "- a\n", ["--set", "name=x"], {}, "<spec>"),
    # ---- environment, arguments, store
    ("threads-env-bad", BASE, [], {"FORGETBENCH_THREADS": "two"}, "FORGETBENCH_THREADS"),
    ("threads-env-0", BASE, [], {"FORGETBENCH_THREADS": "0"}, "FORGETBENCH_THREADS"),
    ("executor-unknown", BASE, ["--executor", "cloud"], {}, "--executor"),
    ("workers-0", BASE, ["--executor", "local", "--workers", "0"], {}, "--workers"),
    ("out-is-a-file", BASE, ["--out", "{tmp}/out"], {"_out_file": "1"}, "--out"),
    ("out-unwritable", BASE, ["--out", "/proc/forgetbench-hostile-out"], {}, "--out"),
    ("spec-is-a-directory", None, [], {}, "<file>"),
    ("spec-missing", "{missing}", [], {}, "<file>"),
]


@pytest.fixture()
def no_training(monkeypatch):
    """Validation must fail before any run: executing one fails the test."""
    import bench.executors.base as base

    def refuse(*a, **k):
        raise AssertionError("a run was executed")
    monkeypatch.setattr(base, "execute_run", refuse)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_spec_exits_2_naming_the_field(case, tmp_path: Path, capsys, monkeypatch, no_training) -> None:
    cid, text, extra, env, field = case
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)           # relative paths (name: ..) would land here
    for k, v in env.items():
        if not k.startswith("_"):
            monkeypatch.setenv(k, v)
    spec = tmp_path / "spec.yaml"
    if text is None:
        spec.mkdir()
    elif text == "{missing}":
        spec = tmp_path / "missing.yaml"
    elif isinstance(text, bytes):
        spec.write_bytes(text)
    else:
        spec.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    if env.get("_out_file"):
        out.write_text("not a folder")
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    args = ["run", str(spec), "--out", str(out), "--no-progress", *extra] if "--out" not in extra else \
        ["run", str(spec), "--no-progress", *extra]
    before = _files(tmp_path)
    rc = main(args)
    captured = capsys.readouterr()
    assert rc == 2, (rc, captured.err[-2000:])
    err = captured.err
    assert field in err, err[:2000]
    assert "Traceback" not in err + captured.out
    assert len(err) < MAX_MESSAGE, len(err)
    assert err.count("\n") <= 2, err[:2000]
    after = _files(tmp_path)
    outside = {p for p in after - before if not (p == "out" or p.startswith("out/"))}
    assert not outside, outside
    assert not list(work.iterdir())
    assert not (work / "pwned").exists() and not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------------- malformed store files
def _store(tmp_path: Path, result: Any, sweep: Any = None) -> Path:
    out = tmp_path / "out"
    rdir = out / "hostile" / "0123456789ab"
    rdir.mkdir(parents=True)
    (out / "hostile" / "sweep.json").write_text(json.dumps(sweep if sweep is not None else
                                                           {"name": "hostile", "runs": ["0123456789ab"]}))
    (rdir / "result.json").write_text(json.dumps(result))
    return out


STORE_CASES = [
    ("status-result-list", ["status", "{out}", "--no-jobs"], [1, 2], None, "result.json"),
    ("status-result-list-jobs", ["status", "{out}"], [1, 2], None, "result.json"),
    ("status-result-string", ["status", "{out}", "--no-jobs"], "done", None, "result.json"),
    ("status-sweep-list", ["status", "{out}", "--no-jobs"], {"status": "done"}, ["x"], "sweep.json"),
    ("run-sweep-list", ["run", "{spec}", "--out", "{out}", "--no-progress"], {"status": "done"}, ["x"], "sweep.json"),
]


@pytest.mark.parametrize("case", STORE_CASES, ids=[c[0] for c in STORE_CASES])
def test_malformed_store_files_are_named_not_a_traceback(case, tmp_path: Path, capsys, no_training) -> None:
    cid, argv, result, sweep, name = case
    out = _store(tmp_path, result, sweep)
    spec = tmp_path / "spec.yaml"
    spec.write_text(BASE)
    rc = main([a.replace("{out}", str(out)).replace("{spec}", str(spec)) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out, captured.err[:2000]
    if name == "result.json":  # a run whose result is not an object: either named (exit 2) or counted as pending
        assert rc == 2 and name in captured.err or rc == 0 and "pending" in captured.out, (rc, captured)
    else:
        assert rc == 2 and name in captured.err, (rc, captured.err[-2000:])


def test_results_with_a_result_json_list_prints_no_traceback(tmp_path: Path, capsys) -> None:
    out = _store(tmp_path, [1, 2])
    rc = main(["results", str(out)])
    captured = capsys.readouterr()
    assert rc in (0, 2) and "Traceback" not in captured.err + captured.out, captured.err[:2000]


def test_run_with_a_result_json_list_names_the_file(tmp_path: Path, capsys, no_training) -> None:
    """The spec's own run has a result.json holding a list: `run` names it and trains nothing."""
    from bench.spec import load_spec, run_id
    spec = tmp_path / "spec.yaml"
    spec.write_text(BASE)
    rid = run_id(load_spec(spec).runs[0])
    rdir = tmp_path / "out" / "hostile" / rid
    rdir.mkdir(parents=True)
    (rdir / "result.json").write_text("[1, 2]")
    rc = main(["run", str(spec), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "result.json" in err and "Traceback" not in err, err[:2000]


# ------------------------------------------------------------------------------------- a real process
def test_subprocess_exit_code_and_clean_stderr(tmp_path: Path) -> None:
    """The real entry point (exit status of the process, nothing on stderr but the message)."""
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(BASE.encode() + b"description: \xff\xfe\n")
    field = "<file>"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(spec), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert p.returncode == 2, p.stderr[-2000:]
    assert field in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert len(p.stderr) < MAX_MESSAGE
    assert sorted(x.name for x in tmp_path.iterdir()) == ["spec.yaml"]


def test_case_count() -> None:
    assert len(CASES) + len(STORE_CASES) >= 80
