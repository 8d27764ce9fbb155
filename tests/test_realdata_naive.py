"""The naive baseline end to end on real data (CIFAR-10 JPEG subset, MNIST); skipped where ../shared/data is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main
from bench.store import read_json

pytestmark = pytest.mark.realdata


def run_spec(tmp_path: Path, text: str) -> list[dict]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    return [read_json(p) for p in sorted(out.glob("*/*/result.json"))]


@pytest.mark.slow
def test_naive_on_cifar10_jpeg_subset_learns(shared_data: Path, tmp_path: Path) -> None:
    res = run_spec(tmp_path, """
name: cifar_naive
seeds: [0]
datasets: [{name: cifar10_jpg, train_per_class: 300, test_per_class: 100, val_fraction: 0.1}]
models: [{name: small_cnn, width: 32}]
methods: [naive]
train: {epochs: 4, batch_size: 128, optimizer: {name: sgd, lr: 0.05}, augment: {crop_padding: 2, flip: true}}
""")
    (r,) = res
    assert r["status"] == "done"
    assert r["data"]["n_test"] == 1000
    assert r["metrics"]["test_acc"] > 0.30, r["metrics"]  # chance is 0.10


@pytest.mark.slow
def test_naive_on_mnist_learns(shared_data: Path, tmp_path: Path) -> None:
    res = run_spec(tmp_path, """
name: mnist_naive
seeds: [0]
datasets: [{name: mnist, val_fraction: 0.1}]
models: [{name: small_cnn, width: 32}]
methods: [naive]
train: {epochs: 6, batch_size: 64, optimizer: {name: sgd, lr: 0.05}}
""")
    assert res[0]["metrics"]["test_acc"] > 0.90, res[0]["metrics"]


def test_symmetric_noise_0_4_is_realised_within_0_02(shared_data: Path, tmp_path: Path) -> None:
    res = run_spec(tmp_path, """
name: cifar_noise
seeds: [0]
datasets: [{name: cifar10_jpg, train_per_class: 500, test_per_class: 50, noise: {kind: symmetric, rate: 0.4}}]
models: [{name: small_cnn, width: 8}]
methods: [naive]
train: {epochs: 1}
""")
    assert abs(res[0]["data"]["realised_rate"] - 0.4) <= 0.02
