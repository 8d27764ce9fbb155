"""Spec validation and expansion: every malformed spec exits 2 naming the field; grids expand as documented."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bench.cli import main
from bench.config import SpecError
from bench.seeding import derive_seed
from bench.spec import build_spec, load_spec, run_id

BASE = """
name: t
seeds: [0]
datasets: [digits]
models: [small_cnn]
methods: [naive]
train: {epochs: 1}
"""

MALFORMED = [
    # (spec text, substring the message must contain: the field path; and another: what is allowed / the value)
    ("name: t\nmethods: [naive]\nepochs: 3\n", "epochs", "unknown key"),
    ("name: t\nmethods: [naive]\ndatsets: [digits]\n", "datsets", "did you mean 'datasets'"),
    ("name: t\ndatasets: [digits]\n", "methods", "required"),
    (BASE.replace("{epochs: 1}", "{epochs: -1}"), "train.epochs", "-1"),
    (BASE.replace("{epochs: 1}", "{epochs: ten}"), "train.epochs", "an integer"),
    (BASE.replace("[digits]", "[{name: digits, noise: {kind: symmetric, rate: 1.0}}]"), "datasets[0].noise.rate", "[0.0, 1.0)"),
    (BASE.replace("[digits]", "[{name: digits, noise: {kind: symmetric, rate: -0.1}}]"), "datasets[0].noise.rate", "-0.1"),
    (BASE.replace("[digits]", "[{name: digits, noise: {kind: gaussian, rate: 0.2}}]"), "datasets[0].noise.kind", "'symmetric'"),
    (BASE.replace("[digits]", "[cifar11]"), "datasets[0].name", "did you mean 'cifar10'"),
    (BASE.replace("[small_cnn]", "[resnet19_cifar]"), "models[0].name", "did you mean 'resnet18_cifar'"),
    (BASE.replace("[naive]", "[naiv]"), "methods[0].name", "did you mean 'naive'"),
    (BASE.replace("[naive]", "[{name: naive, window: 2}]"), "methods[0].params.window", "unknown key"),
    (BASE + "grid: {train.optimizer.lr: []}\n", "grid.train.optimizer.lr", "non-empty list"),
    (BASE + "grid: {training.lr: [0.1]}\n", "grid.training.lr", "did you mean 'train'"),
    (BASE + "grid: {dataset.noise.rate: [0.2, 1.5]}\n", "dataset.noise.rate (from grid.dataset.noise.rate=1.5)", "1.5"),
    (BASE.replace("seeds: [0]", "seeds: []"), "seeds", "non-empty list"),
    (BASE.replace("seeds: [0]", "seeds: [-1]"), "seeds[0]", "non-negative"),
    (BASE.replace("{epochs: 1}", "{optimizer: {name: sgdd}}"), "train.optimizer.name", "did you mean 'sgd'"),
    (BASE.replace("{epochs: 1}", "{batch_size: 0}"), "train.batch_size", "an integer >= 1"),
    (BASE.replace("{epochs: 1}", "{epoch: 3}"), "train.epoch", "did you mean 'epochs'"),
    (BASE.replace("{epochs: 1}", "{label_smoothing: 1.0}"), "train.label_smoothing", "[0.0, 1.0)"),
    (BASE.replace("{epochs: 1}", "{optimizer: {lr: 0}}"), "train.optimizer.lr", "(0.0, inf]"),
    (BASE + "exclude: [{method.name: naive}]\n", "exclude", "at least one run"),
    (BASE + "include: [{optimizer.lr: 0.1}]\n", "include[0].optimizer.lr", "dotted path"),
    (BASE.replace("[digits]", "[{name: digits, train_per_class: all}]"), "datasets[0].train_per_class", "an integer or a number"),
    ("- name: t\n", "<spec>", "a mapping"),
    ("seeds: [0]\nmethods: [naive]\n", "name", "non-empty string"),
    ("name: t\nmethods: [naive\n", "<yaml>", "valid YAML"),
    ("name: !!python/object/apply:os.system [echo hi]\nmethods: [naive]\n", "<yaml>", "valid YAML"),
    (BASE.replace("[small_cnn]", "['timm:resnet1234']"), "models[0].name", "timm model name"),
    (BASE.replace("{epochs: 1}", "{augment: {flip: maybe}}"), "train.augment.flip", "true or false"),
]


@pytest.mark.parametrize("text,field,allowed", MALFORMED, ids=[f"{i:02d}-{m[1]}" for i, m in enumerate(MALFORMED)])
def test_malformed_spec_exits_2_naming_the_field(tmp_path: Path, capsys, text: str, field: str, allowed: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    assert main(["run", str(path), "--dry-run", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert field in err, err
    assert allowed in err, err


def test_missing_spec_file_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["run", str(tmp_path / "nope.yaml"), "--dry-run"]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def spec(text: str):
    import yaml
    return build_spec(yaml.safe_load(textwrap.dedent(text)))


def test_grid_is_the_cartesian_product_of_axes_and_seeds() -> None:
    s = spec(BASE.replace("seeds: [0]", "seeds: [0, 1, 2]") + "grid:\n  dataset.noise.rate: [0.0, 0.2]\n"
             "  train.optimizer.lr: [0.1, 0.01]\n")
    assert len(s.runs) == 3 * 2 * 2
    combos = {(r.seed, r.dataset.noise.rate, r.train.optimizer.lr) for r in s.runs}
    assert len(combos) == 12


def test_include_adds_runs_and_exclude_drops_matching_ones() -> None:
    s = spec(BASE + "grid: {dataset.noise.rate: [0.0, 0.2, 0.4]}\n"
             "exclude: [{dataset.noise.rate: 0.4}]\n"
             "include: [{train.epochs: 3, seed: 7}]\n")
    rates = sorted(r.dataset.noise.rate for r in s.runs if r.seed == 0)
    assert rates == [0.0, 0.2]
    extra = [r for r in s.runs if r.seed == 7]
    assert len(extra) == 1 and extra[0].train.epochs == 3


def test_exclude_matches_resolved_defaults() -> None:
    s = spec(BASE + "grid: {train.epochs: [1, 2]}\nexclude: [{train.optimizer.name: sgd, train.epochs: 2}]\n")
    assert [r.train.epochs for r in s.runs] == [1]


def test_model_and_method_shorthand_fill_kwargs_and_params() -> None:
    s = spec(BASE.replace("[small_cnn]", "[{name: small_cnn, width: 8}]"))
    assert s.runs[0].model.kwargs == {"width": 8}
    assert s.runs[0].method.params == {}


def test_run_id_is_stable_and_changes_with_any_field() -> None:
    a = spec(BASE).runs[0]
    b = spec(BASE).runs[0]
    c = spec(BASE.replace("{epochs: 1}", "{epochs: 2}")).runs[0]
    d = spec(BASE.replace("name: t", "name: other")).runs[0]
    assert run_id(a) == run_id(b) == run_id(d)
    assert run_id(a) != run_id(c)
    assert len(run_id(a)) == 12


def test_float_fields_accept_yaml_exponents_without_a_dot() -> None:
    r = spec(BASE.replace("{epochs: 1}", "{optimizer: {lr: 1e-3, weight_decay: 5e-4}}")).runs[0]
    assert r.train.optimizer.lr == 1e-3 and r.train.optimizer.weight_decay == 5e-4


def test_defaults_are_resolved_into_the_config() -> None:
    r = spec(BASE).runs[0]
    assert r.train.optimizer.name == "sgd" and r.dataset.val_fraction == 0.1


def test_stream_seeds_are_independent_of_other_streams() -> None:
    assert derive_seed(0, "init") == derive_seed(0, "init")
    assert derive_seed(0, "init") != derive_seed(0, "order/1")
    assert derive_seed(0, "init") != derive_seed(1, "init")
    # a known value pins the derivation across versions (sha256 of "0/init", first 8 bytes little endian, 63 bits)
    import hashlib
    expected = int.from_bytes(hashlib.sha256(b"0/init").digest()[:8], "little") & ((1 << 63) - 1)
    assert derive_seed(0, "init") == expected


def test_overrides_edit_the_spec_before_validation(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(BASE)
    s = load_spec(p, ["train.epochs=4", "seeds=[3, 4]"])
    assert [r.seed for r in s.runs] == [3, 4] and s.runs[0].train.epochs == 4
    with pytest.raises(SpecError, match="train.epochs"):
        load_spec(p, ["train.epochs=-2"])


def test_repo_sweeps_are_valid() -> None:
    for path in sorted(Path(__file__).resolve().parents[1].glob("sweeps/**/*.yaml")):
        if not path.name.endswith(".targets.yaml"):      # the smoke gate's targets sit beside its spec
            assert load_spec(path).runs, path
