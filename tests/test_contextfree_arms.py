"""The context-free card's arms end to end on tiny settings (embedded pydoc corpus): one shared original model,
shared generation pools, pool-limit enforcement inside a run, WiSE-FT selection on the validation split."""
from __future__ import annotations

import json

import pytest

from bench.config import SpecError
from bench.runner import execute_run
from bench.spec import build_spec

TINY = {"seq_len": 24, "pretrain_steps": 15, "pretrain_batch_size": 8, "pretrain_warmup_steps": 2,
        "task_max_operand": 9, "task_train": 32, "task_val": 8, "task_test": 8, "eval_chars": 1500, "log_every": 4}
POOL = {"gen_length": 8, "mix_ratio": 0.25}


def _run(tmp_path, methods, seeds=(0,)):
    spec = build_spec({"name": "lm_tiny", "seeds": list(seeds), "device": "cpu", "datasets": [{"name": "pydoc"}],
                       "models": [{"name": "tiny_lm", "n_layer": 1, "d_model": 16, "n_head": 2, "max_len": 64}],
                       "methods": methods,
                       "train": {"epochs": 2, "batch_size": 8,
                                 "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0}}})
    out = {}
    for run in spec.runs:
        res = execute_run(run, tmp_path, progress=False)
        out[run.method.name] = json.loads((tmp_path / "lm_tiny" / res["run_id"] / "result.json").read_text())
    return out


def test_all_arms_share_one_original_model_and_pools(tmp_path):
    arms = [{"name": "plain_ft", **TINY}, {"name": "cf_replay", **TINY, **POOL},
            {"name": "contextual_replay", **TINY, **POOL, "prompt_tokens": 4},
            {"name": "real_replay", **TINY, **POOL}, {"name": "kl_cf", **TINY, **POOL},
            {"name": "l2", **TINY, "l2": 0.5}, {"name": "wise_ft", **TINY, "alphas": [0.0, 0.5, 1.0]}]
    res = _run(tmp_path, arms)
    assert {k: r["status"] for k, r in res.items()} == {a["name"]: "done" for a in arms}, \
        {k: r.get("reason") for k, r in res.items()}
    stages = sorted(p.name.split("-")[0] for p in (tmp_path / "_stages").iterdir() if p.is_dir())
    assert stages == ["lm_original", "lm_pool", "lm_pool"]  # cf pool shared by cf_replay and kl_cf
    orig = {r["metrics"]["orig_bpc"] for r in res.values()}
    assert len(orig) == 1
    for name, r in res.items():
        m = r["metrics"]
        assert m["forgetting_bpc"] == pytest.approx(m["bpc"] - m["orig_bpc"])
        assert 0.0 <= m["task_em"] <= 1.0 and r["data"]["name"] == "pydoc"
    for name in ("cf_replay", "kl_cf", "contextual_replay", "real_replay"):
        m = res[name]["metrics"]
        assert m["pool_max_uses"] <= 2 and m["pool_handed_out"] == m["steps"] * m["replay_per_step"]
    assert res["wise_ft"]["metrics"]["wise_alpha"] in (0.0, 0.5, 1.0)
    # same seed, same data order: kl_cf and cf_replay differ only by the loss term
    assert res["kl_cf"]["metrics"]["bpc"] != res["cf_replay"]["metrics"]["bpc"]


def test_wise_ft_alpha_zero_is_the_original_model(tmp_path):
    r = _run(tmp_path, [{"name": "wise_ft", **TINY, "alphas": [0.0]}])["wise_ft"]
    m = r["metrics"]
    assert r["status"] == "done" and m["wise_alpha"] == 0.0
    assert m["forgetting_bpc"] == pytest.approx(0.0, abs=1e-9) and m["task_em"] == m["orig_task_em"]


def test_an_undersized_pool_raises_or_regenerates_never_reuses(tmp_path):
    small = {**TINY, **POOL, "gen_count": 3, "max_uses": 1}
    res = _run(tmp_path, [{"name": "cf_replay", **small}])["cf_replay"]
    assert res["status"] == "failed" and "PoolExhausted" in res["reason"] and "max_uses=1" in res["reason"]
    res = _run(tmp_path / "b", [{"name": "cf_replay", **small, "on_exhausted": "regenerate"}])["cf_replay"]
    m = res["metrics"]
    assert res["status"] == "done" and m["pool_max_uses"] <= 1 and m["pool_rounds"] >= 2
    pools = [p for p in (tmp_path / "b" / "_stages").iterdir() if p.is_dir() and p.name.startswith("lm_pool")]
    assert len(pools) == m["pool_rounds"] + 1  # every regeneration is a fresh, cached pool


def test_image_cousins_er_replay_and_lwf_on_two_class_splits(tmp_path):
    spec = build_spec({"name": "cl_tiny", "device": "cpu", "datasets": [{"name": "digits", "val_fraction": 0.0}],
                       "models": [{"name": "small_cnn", "width": 8}],
                       "methods": ["seq_ft", {"name": "er_replay", "mem_size": 100}, {"name": "lwf", "alpha": 1.0}],
                       "train": {"epochs": 3, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05},
                                 "record_predictions": False, "keep_checkpoints": False}})
    res = {}
    for run in spec.runs:
        r = execute_run(run, tmp_path, progress=False)
        res[run.method.name] = json.loads((tmp_path / "cl_tiny" / r["run_id"] / "result.json").read_text())
    assert all(r["status"] == "done" for r in res.values()), {k: r.get("reason") for k, r in res.items()}
    assert len([p for p in (tmp_path / "_stages").iterdir() if p.name.startswith("cl_task_a") and p.is_dir()]) == 1
    m = {k: r["metrics"] for k, r in res.items()}
    assert m["seq_ft"]["acc_a_before"] > 0.8 and m["seq_ft"]["acc_a_before"] == m["er_replay"]["acc_a_before"]
    assert m["seq_ft"]["forgetting_acc"] > 0.5                      # class-incremental: plain training forgets A
    assert m["er_replay"]["acc_a"] > m["seq_ft"]["acc_a"] + 0.2     # replay keeps part of it
    with pytest.raises(SpecError, match="first_classes"):
        build_spec({"name": "x", "datasets": ["digits"], "methods": [{"name": "lwf", "first_classes": [0, 0]}]})
    bad = build_spec({"name": "bad", "datasets": ["digits"], "methods": [{"name": "lwf", "first_classes": [0, 12]}]})
    r = execute_run(bad.runs[0], tmp_path, progress=False)
    assert r["status"] == "failed" and "method.params.first_classes" in r["reason"]
