"""Forget Me Not methods end to end on a tiny sweep: one shared base run, V-only selection, sane outputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.config import SpecError
from bench.protocol import ProtocolParams, protocol_splits
from bench.store import read_json

SPEC = """
name: fmn
seeds: [0]
datasets: [{name: digits, val_fraction: 0.1, noise: {kind: symmetric, rate: 0.4}}]
models: [{name: small_cnn, width: 8}]
methods: [naive, kf_i, kf_inf, distilled_kf, evenly_spaced, horizontal, averaged_kf,
          {name: kf_i, protocol: train_holdout}]
train: {epochs: 6, batch_size: 64, optimizer: {name: sgd, lr: 0.05}}
"""


def test_forgetmenot_methods_share_one_base_run(tmp_path: Path, monkeypatch) -> None:
    import bench.stages
    from bench.method import load_methods
    load_methods()
    import methods.forgetmenot.distilled_kf
    calls = []
    real_fit = bench.stages.fit

    def counting_fit(*a, **k):
        calls.append(k.get("desc"))
        return real_fit(*a, **k)
    monkeypatch.setattr(bench.stages, "fit", counting_fit)         
    monkeypatch.setattr(methods.forgetmenot.distilled_kf, "fit", counting_fit)   # the student's import
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    results = {(r["config"]["method"]["name"], r["config"]["method"]["params"].get("protocol")): r
               for r in (read_json(p) for p in out.glob("fmn/*/result.json"))}
    assert len(results) == 8 and all(r["status"] == "done" for r in results.values())
    assert sorted(calls) == ["small_cnn s0", "student"], calls  # one base run for all 8, plus the student
    assert len(list(out.glob("_stages/base-*/done"))) == 1
    for (name, _), r in results.items():
        assert 0.0 <= r["metrics"]["test_acc"] <= 1.0, name
    kf = results[("kf_i", "test_half")]["metrics"]
    assert len(kf["test_acc_splits"]) == 3 and len(kf["members"]) == 3
    assert all(1 <= e < 6 for members in kf["members"] for e in members)  # final epoch never a member
    holdout = results[("kf_i", "train_holdout")]["metrics"]
    assert holdout["protocol"] == "train_holdout" and len(holdout["test_acc_splits"]) == 1
    naive_rows = [json.loads(x) for x in next(p for p in out.glob("fmn/*/metrics.jsonl")
                  if read_json(p.parent / "result.json")["config"]["method"]["name"] == "naive")
                  .read_text().splitlines()]
    assert [r["epoch"] for r in naive_rows] == list(range(1, 7)) and naive_rows[-1]["forget_fraction"] == 0.0
    d = results[("distilled_kf", "test_half")]
    assert d["timings"]["student_train_s"] > 0 and "teacher_test_acc" in d["metrics"]


def test_test_half_splits_are_disjoint_halves_and_seeded() -> None:
    class D:
        test = torch.zeros(10)
        val = torch.zeros(0)
    a = protocol_splits("test_half", D, 3, seed=0)
    b = protocol_splits("test_half", D, 3, seed=0)
    for s, t in zip(a, b):
        assert torch.equal(s.sel_idx, t.sel_idx)
        assert set(s.sel_idx.tolist()).isdisjoint(s.eval_idx.tolist())
        assert len(s.sel_idx) + len(s.eval_idx) == 10
    assert not torch.equal(a[0].sel_idx, a[1].sel_idx)
    with pytest.raises(SpecError, match="val_fraction"):
        protocol_splits("train_holdout", D, 1, seed=0)


def test_bad_protocol_is_a_spec_error() -> None:
    from bench.config import parse
    with pytest.raises(SpecError, match="method.params.protocol.*'test_half'"):
        parse(ProtocolParams, {"protocol": "test_third"}, "method.params")
    with pytest.raises(SpecError, match="method.params.n_splits"):
        parse(ProtocolParams, {"n_splits": 0}, "method.params")
