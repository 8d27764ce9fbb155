"""optuna glue: storage, seeded sampler and pruner, and drawing a trial's values (optuna is imported lazily)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any
from bench.tune.config import Param, TuneConfig



# ------------------------------------------------------------------------------------------------ optuna
def load_optuna():
    import optuna
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def check_optuna_version() -> str | None:
    """A warning when the installed optuna is outside pyproject's pin (optuna>=4.0,<5), else None."""
    import optuna
    major = int(optuna.__version__.split(".")[0])
    if major != 4:
        return (f"optuna {optuna.__version__} is installed but pyproject pins optuna>=4.0,<5 "
                f"(reinstall with pip install 'optuna>=4.0,<5')")
    return None


def make_storage(url: str) -> Any:
    optuna = load_optuna()
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend
        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url)


def make_sampler(cfg: TuneConfig, worker: int) -> Any:
    """The sampler with every argument written out; the seed is offset by the worker index (workers sharing a
    seed would draw the same startup points)."""
    optuna = load_optuna()
    s = cfg.sampler
    seed = None if s.get("seed") is None else s["seed"] + worker
    if s["name"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s["n_startup_trials"],
                                      multivariate=s["multivariate"], constant_liar=s["constant_liar"])


def make_pruner(cfg: TuneConfig) -> Any:
    optuna = load_optuna()
    p = cfg.pruner
    if p["name"] == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=p["n_startup_trials"], n_warmup_steps=p["n_warmup_steps"],
                                       interval_steps=p["interval_steps"])


def suggest_value(trial: Any, p: Param) -> Any:
    if p.type == "float":
        return trial.suggest_float(p.path, p.low, p.high, log=p.log, step=p.step)
    if p.type == "int":
        return trial.suggest_int(p.path, p.low, p.high, log=p.log, step=p.step or 1)
    return trial.suggest_categorical(p.path, p.choices)
