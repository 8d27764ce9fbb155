"""The independent ensemble baseline (card section 4) and batched training of its members (bench.batched)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from bench.cli import main
from bench.store import read_json

SPEC = """
name: ens
seeds: [0, 1]
datasets: [{{name: digits, val_fraction: 0.1}}]
models: [{{name: small_cnn, width: 8}}]
methods: [naive]
include: [{{method: {{name: ensemble, k: 2, batched: {batched}}}, seed: 0}}]
train:
  epochs: 2
  batch_size: 64
  optimizer: {{name: sgd, lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 5.0e-4}}
  schedule: {{name: cosine, warmup_epochs: 0.5}}
  augment: {{crop_padding: 1, flip: true}}
"""


def run_spec(tmp_path: Path, batched: bool = False, monkeypatch=None) -> tuple[Path, list]:
    import bench.stages
    calls: list = []
    if monkeypatch is not None:
        real_fit = bench.stages.fit
        monkeypatch.setattr(bench.stages, "fit", lambda *a, **k: calls.append(k.get("seed")) or real_fit(*a, **k))
    spec = tmp_path / "ens.yaml"
    spec.write_text(SPEC.format(batched=str(batched).lower()))
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    return out, calls


def by_method(out: Path) -> dict[tuple[str, int], tuple[Path, dict]]:
    res = {}
    for p in out.glob("ens/*/result.json"):
        r = read_json(p)
        assert r["status"] == "done", r.get("reason")
        res[(r["config"]["method"]["name"], r["config"]["seed"])] = (p.parent, r)
    return res


# ------------------------------------------------------------------------------------------ averaging
def test_ensemble_averages_softmax_not_logits() -> None:
    from baselines.ensemble import ensemble_scores
    from bench.forgetting import softmax_ensemble
    # one member saturated on class 0, two moderately on class 1: mean logits pick 0, mean softmax picks 1
    logits = [torch.tensor([[20.0, 0.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([[0.0, 2.0]])]
    assert int(torch.stack(logits).mean(0).argmax()) == 0
    probs = softmax_ensemble(logits)
    p1 = (0.0 + 2 * torch.sigmoid(torch.tensor(2.0))) / 3 + torch.sigmoid(torch.tensor(-20.0)) / 3
    assert probs[0, 1].item() == pytest.approx(p1.item(), rel=1e-6)
    scores = ensemble_scores(probs, torch.tensor([1]))
    assert scores["acc"] == 1.0
    assert scores["loss"] == pytest.approx(-torch.log(p1).item(), rel=1e-6)


def test_member_seeds_are_consecutive_from_the_run_seed() -> None:
    from baselines.ensemble import member_seeds
    assert member_seeds(3, 4) == [3, 4, 5, 6]


@pytest.mark.parametrize("k", [0, -1])
def test_ensemble_rejects_k_below_one_as_a_spec_error(tmp_path: Path, k: int, capsys) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(SPEC.format(batched="false").replace("k: 2", f"k: {k}"))
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr()
    assert "method.params.k" in err.out + err.err


# ------------------------------------------------------------------------------------------ end to end
def test_ensemble_reuses_naive_base_runs_and_scores_their_averaged_softmax(tmp_path: Path, monkeypatch) -> None:
    out, calls = run_spec(tmp_path, monkeypatch=monkeypatch)
    assert sorted(calls) == [0, 1]                                   # one fit per seed, none for the ensemble
    assert len(list((out / "_stages").glob("base-*/done"))) == 2
    res = by_method(out)
    ens_dir, ens = res[("ensemble", 0)]
    logits = [torch.load(res[("naive", s)][0] / "artifacts" / "test_logits.pt", weights_only=True) for s in (0, 1)]
    probs = torch.stack(logits).softmax(-1).mean(0)
    from bench.data import load_splits
    from bench.config import DataConfig
    y = load_splits(DataConfig(name="digits", val_fraction=0.1), device=torch.device("cpu")).test.y
    assert ens["metrics"]["test_acc"] == pytest.approx(float((probs.argmax(-1) == y).double().mean()), abs=1e-12)
    assert ens["metrics"]["member_test_acc_mean"] == pytest.approx(
        sum(res[("naive", s)][1]["metrics"]["test_acc"] for s in (0, 1)) / 2, abs=1e-9)
    assert ens["metrics"]["k"] == 2 and ens["metrics"]["batched"] == 0
    saved = torch.load(ens_dir / "artifacts" / "test_probs.pt", weights_only=True)
    torch.testing.assert_close(saved, probs, rtol=1e-6, atol=1e-7)

    # a second sweep over the same store reads the members from disk: no training at all
    calls.clear()
    spec2 = tmp_path / "ens2.yaml"
    spec2.write_text(SPEC.format(batched="false").replace("name: ens\n", "name: ens2\n").replace("seeds: [0, 1]",
                                                                                              "seeds: [0]"))
    assert main(["run", str(spec2), "--out", str(out), "--no-progress"]) == 0
    assert calls == []


def test_batched_ensemble_trains_members_in_their_own_stage_in_base_format(tmp_path: Path, monkeypatch) -> None:
    out, calls = run_spec(tmp_path, batched=True, monkeypatch=monkeypatch)
    assert sorted(calls) == [0, 1]                  # only the naive runs call fit; the batched pass does not
    base = {read_json(d / "key.json")["seed"]: d for d in (out / "_stages").glob("base-*") if d.is_dir()}
    batched = {read_json(d / "key.json")["seed"]: d for d in (out / "_stages").glob("batched-base-*") if d.is_dir()}
    assert sorted(base) == sorted(batched) == [0, 1]
    from bench.stages import BaseRun
    for s in (0, 1):
        a, b = base[s], batched[s]
        assert read_json(b / "key.json") == {**read_json(a / "key.json"), "batched": True}
        files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())  # noqa: E731
        assert files(a) == files(b)
        ra = BaseRun(dir=a, history=[], wall_time_s=0.0)
        rb = BaseRun(dir=b, history=[], wall_time_s=0.0)
        fa, fb = ra.final_state(), rb.final_state()
        for key in fa:
            torch.testing.assert_close(fb[key].float(), fa[key].float(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(rb.probs("test"), ra.probs("test"), rtol=0, atol=2e-3)  # float16 on disk
        ha = [line for line in (a / "history.jsonl").read_text().splitlines()]
        hb = [line for line in (b / "history.jsonl").read_text().splitlines()]
        assert len(ha) == len(hb) == 2
    res = by_method(out)
    ens = res[("ensemble", 0)][1]["metrics"]
    assert ens["batched"] == 1
    logits = [torch.load(res[("naive", s)][0] / "artifacts" / "test_logits.pt", weights_only=True) for s in (0, 1)]
    saved = torch.load(res[("ensemble", 0)][0] / "artifacts" / "test_probs.pt", weights_only=True)
    torch.testing.assert_close(saved, torch.stack(logits).softmax(-1).mean(0), rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------------ batched_fit
def _digits():
    from bench.config import DataConfig
    from bench.data import load_splits
    return load_splits(DataConfig(name="digits", val_fraction=0.1), device=torch.device("cpu"))


def _recipe(**extra):
    from bench.config import TrainConfig, parse
    raw = {"epochs": 2, "batch_size": 64, "schedule": {"name": "cosine", "warmup_epochs": 0.5},
           "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
           "augment": {"crop_padding": 1, "flip": True}, **extra}
    return parse(TrainConfig, raw, "train")


@pytest.mark.parametrize("extra", [{}, {"grad_clip": 0.5, "label_smoothing": 0.1}], ids=["plain", "clip+smooth"])
def test_batched_fit_of_two_members_matches_sequential_fit(extra) -> None:
    """fp32, 2 epochs: ~5e-7 relative on one CPU, up to 3.3e-5 absolute (first conv weight) on another, where
    oneDNN picks other conv kernels for the stacked members (logits then differ by up to 2.2e-4, and 4.7e-3 with clip + smoothing). The tolerance (1e-2) leaves room for rounding growth, which is fast
    when a ReLU input sits within rounding of 0 (longer or higher-lr runs can drift to ~1e-2 that way; the
    float64 test below shows the algorithm itself is exact)."""
    from bench.batched import batched_fit
    from bench.config import ModelConfig
    from bench.train import fit, init_model, predict
    d = _digits()
    recipe = _recipe(**extra)
    mc = ModelConfig(name="small_cnn", kwargs={"width": 8})

    def make(s):
        return init_model(mc, num_classes=d.num_classes, in_chans=d.in_chans, img_size=d.img_size, seed=s)
    seeds = [3, 4]
    seq = [make(s) for s in seeds]
    hist_seq = [fit(m, d.train, recipe, seed=s, device="cpu", val=d.val, progress=False) for m, s in zip(seq, seeds)]
    bat = [make(s) for s in seeds]
    hist_bat = batched_fit(bat, d.train, recipe, seeds=seeds, device="cpu", val=d.val, progress=False)
    for ms, mb, hs, hb in zip(seq, bat, hist_seq, hist_bat):
        ss, sb = ms.state_dict(), mb.state_dict()
        assert ss.keys() == sb.keys()
        for key in ss:  # weights AND BatchNorm running stats / num_batches_tracked
            torch.testing.assert_close(sb[key].float(), ss[key].float(), rtol=1e-2, atol=1e-2, msg=key)
        torch.testing.assert_close(predict(mb, d.test), predict(ms, d.test), rtol=1e-2, atol=1e-2)
        assert [h.keys() for h in hb] == [h.keys() for h in hs]
        for h_s, h_b in zip(hs, hb):
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
                assert h_b[key] == pytest.approx(h_s[key], rel=1e-2, abs=1e-4), key
    # the two members really are different models (own seeds), not one model twice
    assert not torch.allclose(bat[0].state_dict()["0.0.weight"], bat[1].state_dict()["0.0.weight"])


class _ToDouble(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double()


def test_batched_fit_in_float64_equals_sequential_fit_to_rounding() -> None:
    """In float64 the two agree to ~1e-15: the fp32 differences above are rounding, not a different algorithm."""
    from bench.batched import batched_fit
    from bench.config import ModelConfig
    from bench.train import fit, init_model
    d = _digits()
    recipe = _recipe(epochs=3, grad_clip=1.0)
    mc = ModelConfig(name="small_cnn", kwargs={"width": 8})

    def make(s):
        m = init_model(mc, num_classes=d.num_classes, in_chans=d.in_chans, img_size=d.img_size, seed=s)
        return nn.Sequential(_ToDouble(), m.double())
    seeds = [0, 5]
    seq = [make(s) for s in seeds]
    for m, s in zip(seq, seeds):
        fit(m, d.train, recipe, seed=s, device="cpu", progress=False)
    bat = [make(s) for s in seeds]
    batched_fit(bat, d.train, recipe, seeds=seeds, device="cpu", progress=False)
    for ms, mb in zip(seq, bat):
        ss, sb = ms.state_dict(), mb.state_dict()
        for key in ss:
            torch.testing.assert_close(sb[key], ss[key], rtol=1e-10, atol=1e-12, msg=key)


def test_batched_fit_refuses_models_with_dropout() -> None:
    from bench.batched import BatchingUnsupported, batched_fit, batching_blocker
    d = _digits()
    net = lambda: nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 10))  # noqa: E731
    assert "dropout" in batching_blocker(net())
    assert batching_blocker(nn.Sequential(nn.Flatten(), nn.Dropout(0.0), nn.Linear(64, 10))) is None
    with pytest.raises(BatchingUnsupported, match="dropout"):
        batched_fit([net(), net()], d.train, _recipe(), seeds=[0, 1], device="cpu", progress=False)
