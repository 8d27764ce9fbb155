"""known_train: per-trial (r, lr) draws and parameter validation (card section 4)."""
from __future__ import annotations

import pytest

from bench.config import SpecError, parse
from methods.know.known_train import KnownTrainParams, draw_trials


def test_draws_are_in_range_distinct_and_seeded() -> None:
    rr, lr = [0.3, 0.9], [1e-5, 4e-3]
    a = draw_trials(0, 2, 4, rr, lr)
    assert [(d.source, d.trial) for d in a] == [(i, t) for i in range(2) for t in range(4)]
    assert all(rr[0] <= d.rate <= rr[1] and lr[0] <= d.step_lr <= lr[1] for d in a)
    assert len({d.rate for d in a}) == len(a) and len({d.step_lr for d in a}) == len(a)
    assert len({d.seed for d in a}) == len(a)                        # a fresh net per trial
    assert draw_trials(0, 2, 4, rr, lr) == a                         # same seed -> same draws
    assert [d.rate for d in draw_trials(1, 2, 4, rr, lr)] != [d.rate for d in a]
    assert draw_trials(0, 1, 2, rr, lr) == a[:2]                     # adding trials/sources never shifts a draw
    many = draw_trials(0, 1, 400, rr, lr)                            # uniform, not log-uniform: mean near the middle
    assert abs(sum(d.rate for d in many) / 400 - 0.6) < 0.03
    assert abs(sum(d.step_lr for d in many) / 400 - (1e-5 + 4e-3) / 2) < 2.5e-4
    fixed = draw_trials(0, 1, 3, [0.5, 0.5], [1e-3, 1e-3])           # lo = hi fixes the value
    assert {d.rate for d in fixed} == {0.5} and {d.step_lr for d in fixed} == {1e-3}


def test_defaults_follow_the_official_collection() -> None:
    p = parse(KnownTrainParams, {}, "method.params")
    assert p.rate_range == [0.3, 0.9] and p.step_lr_range == [1e-5, 4e-3] and p.sources == [{}]
    p = parse(KnownTrainParams, {"step_lr_range": ["1e-5", "4e-3"],                      # YAML reads 1e-5 as a string
                                 "sources": [{}, {"name": "mnist", "classes": None}]}, "method.params")
    assert p.step_lr_range == [1e-5, 4e-3] and len(p.sources) == 2


@pytest.mark.parametrize("params,field", [
    ({"rate_range": [0.9, 0.3]}, "method.params.rate_range"),
    ({"rate_range": [0.0, 0.5]}, "method.params.rate_range"),
    ({"rate_range": [0.5, 1.0]}, "method.params.rate_range"),
    ({"rate_range": [0.5]}, "method.params.rate_range"),
    ({"rate_range": 0.5}, "method.params.rate_range"),
    ({"step_lr_range": [0.0, 1e-3]}, "method.params.step_lr_range"),
    ({"step_lr_range": [1e-2, 1e-3]}, "method.params.step_lr_range"),
    ({"trials": 0}, "method.params.trials"),
    ({"sources": []}, "method.params.sources"),
    ({"sources": ["mnist"]}, "method.params.sources[0]"),
    ({"sources": [{}, {"clases": [1]}]}, "method.params.sources[1].clases"),
    ({"sources": [{"val_fraction": 1.5}]}, "method.params.sources[0].val_fraction"),
    ({"rate": 0.5}, "method.params.rate"),                                   # replaced by rate_range
    ({"holdout": 1.0}, "method.params.holdout"),
    ({"meta_min_steps": -1}, "method.params.meta_min_steps"),
])
def test_bad_params_name_the_field(params: dict, field: str) -> None:
    with pytest.raises(SpecError) as e:
        parse(KnownTrainParams, params, "method.params")
    assert e.value.path == field, e.value
