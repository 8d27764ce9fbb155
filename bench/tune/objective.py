"""A trial: the spec's base run with the trial's values, trained on train, scored on validation every epoch
(pruned when optuna says so). The test split is dropped right after loading."""
from __future__ import annotations

from typing import Any

from bench.config import SpecError
from bench.config import to_dict
from bench.data import load_splits
from bench.spec import canonical_json
from bench.device import resolve_device
from bench.spec import run_id
from bench.train import fit, init_model
from bench.spec import run_with
from bench.tune.config import TuneConfig
from bench.tune.study import load_optuna, suggest_value




# ------------------------------------------------------------------------------------------------ objective
_SPLITS: dict[str, tuple[Any, Any, tuple[int, int, int]]] = {}


def _train_val(dataset: Any, device: Any) -> tuple[Any, Any, tuple[int, int, int]]:
    """(train, val, (num_classes, in_chans, img_size)) of a dataset config, kept per worker process. The test
    split is dropped here: tuning never reads it."""
    key = canonical_json([to_dict(dataset), str(device)])
    if key not in _SPLITS:
        splits = load_splits(dataset, device=device)
        if len(_SPLITS) >= 2:
            _SPLITS.clear()
        _SPLITS[key] = (splits.train, splits.val, (splits.num_classes, splits.in_chans, splits.img_size))
        del splits
    return _SPLITS[key]


def objective(trial: Any, cfg: TuneConfig, base: dict[str, Any], spec_name: str) -> float:
    """Train the base model with the trial's parameters; report the validation metric after every epoch."""
    optuna = load_optuna()

    values = {p.path: suggest_value(trial, p) for p in cfg.params}
    run = run_with(base, spec_name, values)
    trial.set_user_attr("run_id", run_id(run))
    device = resolve_device(run.device)
    train, val, meta = _train_val(run.dataset, device)
    if len(val) == 0:
        raise SpecError("dataset.val_fraction", run.dataset.val_fraction, "a fraction > 0: tuning needs a "
                                                                           "validation split")
    model = init_model(run.model, num_classes=meta[0], in_chans=meta[1], img_size=meta[2], seed=run.seed).to(device)
    reported: list[float] = []

    def report(end: Any) -> None:
        value = float(end.metrics[cfg.metric])
        reported.append(value)
        trial.report(value, end.epoch)
        trial.set_user_attr("epochs_done", end.epoch)
        if end.epoch < run.train.epochs and trial.should_prune():  # a finished trial is reported, not pruned
            raise optuna.TrialPruned(f"pruned after epoch {end.epoch}/{run.train.epochs} "
                                     f"({cfg.metric}={value:.4f})")

    fit(model, train, run.train, seed=run.seed, device=device, val=val, hooks=[report], progress=False,
        desc=f"trial {trial.number}")
    if not reported:
        raise ValueError("no epoch was trained (train.epochs = 0)")
    return reported[-1]
