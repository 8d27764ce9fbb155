"""KNOW family end to end on a tiny digits task: one shared pretraining + trajectory stage, every method done."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.config import SpecError, parse
from methods.know.layout import KINDS
from methods.know.known import KnownNet
from bench.method import METHODS, load_methods
from bench.store import read_json


pytestmark = pytest.mark.usefixtures("one_torch_thread")


SPEC = """
name: knowtiny
seeds: [0]
datasets: [{{name: digits, classes: [5, 6, 7, 8, 9], val_fraction: 0.1}}]
models: [{{name: small_cnn, width: 8}}]
methods:
  - {{name: know_naive, <<: &p {{source: {{classes: [0, 1, 2, 3, 4]}}, pretrain_epochs: 2, phase1_epochs: 1,
                                 phase2_epochs: 1}}}}
  - {{name: taskvector, <<: *p}}
  - {{name: expfit, steps: 3, <<: *p}}
  - {{name: know_x2, weights: {weights}, <<: *p}}
  - {{name: know_x8, weights: {weights}, <<: *p}}
train: {{epochs: 2, batch_size: 64, optimizer: {{name: adam, lr: 0.001, weight_decay: 0}}}}
"""


def test_know_methods_share_one_trajectory(tmp_path: Path, monkeypatch) -> None:
    import methods.know.trajectory
    calls = []
    real_fit = methods.know.trajectory.fit
    monkeypatch.setattr(methods.know.trajectory, "fit", lambda *a, **k: calls.append(k.get("desc")) or real_fit(*a, **k))
    torch.manual_seed(0)
    ckpt = tmp_path / "known.pt"          # a random KNOWN checkpoint (the meta-training format)
    torch.save({k: KnownNet().state_dict() for k in KINDS}, ckpt)
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.format(weights=ckpt))
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    results = {r["config"]["method"]["name"]: r for r in (read_json(p) for p in out.glob("knowtiny/*/result.json"))}
    assert sorted(results) == ["expfit", "know_naive", "know_x2", "know_x8", "taskvector"]
    assert all(r["status"] == "done" for r in results.values()), {k: r.get("reason") for k, r in results.items()}
    assert len(list(out.glob("_stages/know_trajectory-*/done"))) == 1
    assert calls.count("know pretrain s0") == 1 and sum("know forget" in c for c in calls) == 4, calls
    info = json.loads(next(out.glob("_stages/know_trajectory-*/info.json")).read_text())
    n = info["subset_sizes"][0]
    assert info["subset_sizes"] == [n] + [round(n * 0.5 ** s) for s in range(1, 5)]
    for name, r in results.items():
        m = r["metrics"]
        assert 0.0 <= m["test_acc"] <= 1.0 and 0.0 <= m["source_test_acc"] <= 1.0, name
    assert results["know_naive"]["metrics"]["steps"] == 0 and "rel_change_conv" not in results["know_naive"]["metrics"]
    assert results["know_x8"]["metrics"]["steps"] == 3 and results["know_x8"]["metrics"]["scale"] == 8
    assert results["expfit"]["metrics"]["steps"] == 3
    from methods.know.known import known_backend
    assert results["know_x2"]["metrics"]["known_backend"] == known_backend("cpu")      # recorded with the result
    assert results["know_x8"]["metrics"]["rel_change_conv"] > 0
    traj = torch.load(next(out.glob("_stages/know_trajectory-*/trajectory.pt")), weights_only=True)
    assert traj["conv"].shape[0] == 5 and traj["bias"].shape[0] == 5


@pytest.mark.parametrize("method,params,field", [
    ("know_naive", {"rate": 1.5}, "method.params.rate"),
    ("know_x2", {"trajectory_length": 3}, "method.params.trajectory_length"),
    ("know_x4", {"weights": "/nonexistent.pt"}, "method.params.weights"),
    ("taskvector", {"lam": -1.0}, "method.params.lam"),
    ("expfit", {"steps": 0}, "method.params.steps"),
    ("know_naive", {"source": {"clases": [1]}}, "method.params.source.clases"),
    ("know_x8", {"pretrain_epochs": 0}, "method.params.pretrain_epochs"),
    ("know_naive", {"step_optimizer": "lbfgs"}, "method.params.step_optimizer"),
    ("know_x2", {"backend": "cuda"}, "method.params.backend"),
])
def test_bad_params_are_spec_errors(method: str, params: dict, field: str) -> None:
    load_methods()
    with pytest.raises(SpecError) as e:
        parse(METHODS.get(method).Params, params, "method.params")
    assert e.value.path == field


def test_cpu_sweeps_parse() -> None:
    from bench.paths import PROJECT_ROOT
    from bench.spec import load_spec
    for name in ("know_cpu", "know_cifar"):
        spec = load_spec(Path(PROJECT_ROOT) / "sweeps" / "know" / f"{name}.yaml")
        methods = {r.method.name for r in spec.runs}
        assert {"know_naive", "taskvector", "expfit", "know_x2", "know_x4", "know_x8"} <= methods
        load_methods()
        for r in spec.runs:
            parse(METHODS.get(r.method.name).Params, r.method.params, "method.params")


def test_known_meta_training_checkpoint_is_usable(tmp_path: Path) -> None:
    spec = tmp_path / "m.yaml"
    spec.write_text("""
name: meta
seeds: [0]
datasets: [{name: digits, val_fraction: 0.1}]
models: [{name: small_cnn, width: 8}]
methods: [{name: known_train, pretrain_epochs: 1, trajectory_length: 6, meta_epochs: 2, meta_batch: 1024,
           meta_min_steps: 3, trials: 2, sources: [{}, {classes: [0, 1, 2]}]}]
train: {epochs: 1, batch_size: 64, optimizer: {name: adam, lr: 0.001, weight_decay: 0}}
""")
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    (res,) = [read_json(p) for p in out.glob("meta/*/result.json")]
    assert res["status"] == "done", res.get("reason")
    m = res["metrics"]
    assert m["heldout_l1_conv"] >= 0 and m["heldout_l1_zero_conv"] > 0 and m["heldout_l1_last_step_conv"] > 0
    # 2 sources x 2 trials, each its own (r, lr) draw and cached trajectory stage; windows pooled per kind
    draws = m["trial_draws"]
    assert [(d["source"], d["trial"]) for d in draws] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(0.3 <= d["rate"] <= 0.9 and 1e-5 <= d["step_lr"] <= 4e-3 for d in draws)
    assert len(list(out.glob("_stages/know_trajectory-*/done"))) == 4
    assert m["n_train_samples_fc"] + m["n_heldout_samples_fc"] == sum(d["scalars"]["fc"] for d in draws)
    assert draws[2]["scalars"]["fc"] == 3 * draws[0]["scalars"]["fc"] // 10   # the 3-class source's head
    assert m["meta_epochs_bias"] == 3 and m["meta_epochs_conv"] == 2            # few bias samples: more epochs
    from methods.know.known import load_known
    nets = load_known(m["checkpoint"])
    assert set(nets) == set(KINDS)
