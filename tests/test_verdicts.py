"""The verdict engine on synthetic stores with known answers (no training: result.json files written directly)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench.config import to_dict
from bench.ids import run_id
from bench.paper import Claim, Side, papers
from bench.spec import build_spec
from bench.store import atomic_write_json
from report.verdicts import (CONTRADICTED, INCONCLUSIVE, NOT_RUN, SUPPORTED, confidence_interval, decide, judge,
                             load_runs, verdict_frame, verdicts)

FMN = next(p for p in papers() if p.key == "forgetmenot")
CLAIM = next(c for c in FMN.claims if c.key == "kf_inf_vs_naive")


def write_store(root: Path, values: dict[str, dict[int, float | None]], *, noise: str = "symmetric",
                extra: dict[str, dict] | None = None) -> Path:
    """One result.json per (method, seed): a float is a done run with that test_acc, None a failed run."""
    methods = sorted(values)
    seeds = sorted({s for v in values.values() for s in v})
    spec = build_spec({"name": "syn", "seeds": seeds, "methods": methods,
                       "datasets": [{"name": "digits", "noise": {"kind": noise, "rate": 0.4 if noise != "none" else 0.0}}]})
    for run in spec.runs:
        v = values[run.method.name].get(run.seed, "absent")
        if v == "absent":
            continue
        rid = run_id(run)
        res = {"run_id": rid, "spec": "syn", "config": to_dict(run), "git_sha": "x"}
        if v is None:
            res.update(status="failed", reason="RuntimeError: out of memory")
        else:
            res.update(status="done", metrics={"test_acc": v, **(extra or {}).get(run.method.name, {})})
        atomic_write_json(root / "syn" / rid / "result.json", res)
    return root


def one(tmp_path: Path, values, claim: Claim = CLAIM, **kw):
    runs = load_runs(write_store(tmp_path, values, **kw))
    (v,) = judge(FMN, claim, runs)
    return v


def test_t_interval_matches_the_textbook_formula():
    lo, hi = confidence_interval(np.array([1.0, 2.0, 3.0]))
    half = 4.302652729911275 / math.sqrt(3)          # t_{0.975, 2} * sd (= 1) / sqrt(3)
    assert (lo, hi) == pytest.approx((2 - half, 2 + half), rel=1e-9)
    assert all(math.isnan(x) for x in confidence_interval(np.array([0.5])))


def test_bootstrap_is_seeded_and_brackets_the_mean():
    d = np.array([0.01, 0.03, 0.02, 0.04, 0.0])
    a, b = confidence_interval(d, method="bootstrap", seed=3), confidence_interval(d, method="bootstrap", seed=3)
    assert a == b and a[0] < d.mean() < a[1]


def test_consistent_gain_is_supported(tmp_path):
    v = one(tmp_path, {"naive": {0: 0.60, 1: 0.62, 2: 0.61}, "kf_inf": {0: 0.62, 1: 0.65, 2: 0.635}})
    assert v.verdict == SUPPORTED and v.n == 3 and v.mean == pytest.approx(0.025, abs=1e-9) and v.lo > 0


def test_consistent_loss_is_contradicted(tmp_path):
    v = one(tmp_path, {"naive": {0: 0.63, 1: 0.645, 2: 0.64}, "kf_inf": {0: 0.60, 1: 0.62, 2: 0.61}})
    assert v.verdict == CONTRADICTED and v.hi < 0


def test_mixed_signs_are_inconclusive(tmp_path):
    v = one(tmp_path, {"naive": {0: 0.60, 1: 0.62, 2: 0.61}, "kf_inf": {0: 0.62, 1: 0.61, 2: 0.615}})
    assert v.verdict == INCONCLUSIVE and v.lo < 0 < v.hi


def test_ties_contradict_a_strict_improvement(tmp_path):
    v = one(tmp_path, {"naive": {0: 0.6, 1: 0.7, 2: 0.8}, "kf_inf": {0: 0.6, 1: 0.7, 2: 0.8}})
    assert v.mean == 0 and v.lo == v.hi == 0 and v.verdict == CONTRADICTED


def test_one_seed_has_no_ci_and_says_so(tmp_path):
    v = one(tmp_path, {"naive": {0: 0.60}, "kf_inf": {0: 0.70}})
    assert v.n == 1 and v.verdict == INCONCLUSIVE and "n = 1: no CI" in v.note
    assert "no CI" in v.effect_str(100)


def test_failed_and_missing_seeds_are_counted_not_paired(tmp_path):
    v = one(tmp_path, {"naive": {0: 0.60, 1: 0.62, 2: 0.61, 3: 0.6}, "kf_inf": {0: 0.63, 1: 0.65, 2: None}})
    assert v.n == 2
    assert "kf_inf: 1 failed (seed 2)" in v.note and "seed 3 missing" in v.note


def test_a_method_never_run_is_not_run(tmp_path):
    runs = load_runs(write_store(tmp_path, {"naive": {0: 0.6}, "kf_inf": {0: 0.7}}))
    v = judge(FMN, next(c for c in FMN.claims if c.key == "kf_i_vs_naive"), runs)[0]
    assert v.verdict == NOT_RUN and "no runs of kf_i" in v.note


def test_claims_under_label_noise_do_not_apply_to_clean_runs(tmp_path):
    v = one(tmp_path, {"naive": {0: 0.6, 1: 0.6}, "kf_inf": {0: 0.7, 1: 0.7}}, noise="none")
    assert v.verdict == NOT_RUN


def test_test_half_methods_are_paired_with_naive_on_the_same_halves(tmp_path):
    """naive's full-test accuracy (0.5) must not be compared with KF's halves: its halves are (0.6, 0.7, 0.8)."""
    extra = {"naive": {"test_acc_splits": [0.6, 0.7, 0.8], "protocol_halves": "test_half"},
             "kf_inf": {"test_acc_splits": [0.65, 0.75, 0.85], "protocol": "test_half"}}
    v = one(tmp_path, {"naive": {0: 0.5, 1: 0.5}, "kf_inf": {0: 0.75, 1: 0.75}}, extra=extra)
    assert v.mean == pytest.approx(0.05) and "test halves 1-3" in v.note


def test_equal_control_needs_the_ci_inside_the_margin():
    c = Claim("x", "x", Side("a"), Side("b"), direction="equal", margin=0.01)
    assert decide(c, 3, -0.005, 0.004) == SUPPORTED
    assert decide(c, 3, 0.02, 0.05) == CONTRADICTED
    assert decide(c, 3, -0.002, 0.03) == INCONCLUSIVE


def test_verdict_table_lists_every_claim_of_every_paper(tmp_path):
    runs = load_runs(write_store(tmp_path, {"naive": {0: 0.60, 1: 0.62, 2: 0.61}, "kf_inf": {0: 0.62, 1: 0.65, 2: 0.635}}))
    table = verdict_frame(verdicts(runs))
    assert set(table["paper"]) == {p.key for p in papers()}
    row = table[table["claim"].str.startswith("kf_inf − naive")].iloc[0]
    assert row["verdict"] == SUPPORTED and row["effect [95% CI]"].startswith("+2.50 [")


def test_variants_of_a_side_get_their_own_rows(tmp_path):
    """Two KF windows in one setting are two comparisons, not one mixed up (one run per seed each)."""
    root = tmp_path
    spec = build_spec({"name": "syn", "seeds": [0, 1, 2], "methods": ["naive", {"name": "kf_inf", "window": 1},
                                                                      {"name": "kf_inf", "window": 2}],
                       "datasets": [{"name": "digits", "noise": {"kind": "symmetric", "rate": 0.4}}]})
    gain = {1: 0.05, 2: -0.05}
    for run in spec.runs:
        acc = 0.6 + run.seed * 0.01 + (gain[run.method.params["window"]] if run.method.name == "kf_inf" else 0)
        atomic_write_json(root / "syn" / run_id(run) / "result.json",
                          {"run_id": run_id(run), "spec": "syn", "config": to_dict(run), "status": "done",
                           "metrics": {"test_acc": acc}})
    vs = judge(FMN, CLAIM, load_runs(root))
    by = {v.setting.rsplit("window=", 1)[-1]: v.verdict for v in vs}
    assert by == {"1": SUPPORTED, "2": CONTRADICTED}


def test_the_gate_fails_when_a_pinned_supported_verdict_changes(tmp_path):
    from report.verdicts import check_verdicts, supported_verdicts
    good = write_store(tmp_path / "good", {"naive": {0: 0.60, 1: 0.62, 2: 0.61}, "kf_inf": {0: 0.62, 1: 0.65, 2: 0.635}})
    pinned = supported_verdicts(good)
    assert any(p["claim"] == "kf_inf_vs_naive" for p in pinned)
    assert check_verdicts(good, pinned) == []
    bad = write_store(tmp_path / "bad", {"naive": {0: 0.60, 1: 0.62, 2: 0.61}, "kf_inf": {0: 0.60, 1: 0.62, 2: 0.61}})
    (msg,) = check_verdicts(bad, pinned)
    assert "kf_inf_vs_naive" in msg and "now contradicted" in msg
    assert check_verdicts(bad, "supported") and "a list" in check_verdicts(bad, "supported")[0]
