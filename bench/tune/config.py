"""The `tune:` section of a spec: its search space, sampler, pruner, storage and workers, parsed and checked."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import SpecError
from bench.registry import suggest


TUNE_KEYS = ("params", "metric", "direction", "n_trials", "sampler", "pruner", "storage", "workers", "executor",
             "study_name")
METRICS = ("val_acc", "val_loss")
SAMPLERS = {"tpe": ("seed", "n_startup_trials", "multivariate", "constant_liar"), "random": ("seed",)}
PRUNERS = {"median": ("n_startup_trials", "n_warmup_steps", "interval_steps"), "none": ()}
TUNE_EXECUTORS = ("local", "slurm", "submitit-local")
RUN_HEADS = ("seed", "device", "dataset", "model", "train")
TUNE_DIR = "tune"
STALE = "stale"        # user attr of trials failed because their worker died (not counted towards n_trials)


# ------------------------------------------------------------------------------------------------ config
@dataclass
class Param:
    path: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: list[Any] = field(default_factory=list)


@dataclass
class TuneConfig:
    params: list[Param]
    metric: str = "val_acc"
    direction: str = "maximize"
    n_trials: int = 20
    sampler: dict[str, Any] = field(default_factory=dict)
    pruner: dict[str, Any] = field(default_factory=dict)
    storage: str = ""
    workers: int = 1
    executor: str = "local"
    study_name: str = ""


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _parse_param(path: str, raw: Any) -> Param:
    where = f"tune.params.{path}"
    head = path.split(".")[0]
    if head == "method":
        raise SpecError(where, path, "a path into the base training run (seed, device, dataset, model, train): "
                                     "tuning trains the base model only, method parameters are not tuned")
    if head not in RUN_HEADS:
        raise SpecError(where, path, f"a dotted run path starting with one of {', '.join(RUN_HEADS)}"
                                     f"{suggest(head, list(RUN_HEADS))}")
    if not isinstance(raw, dict):
        raise SpecError(where, raw, "a mapping {type: float|int|categorical, low, high, log, step} or "
                                    "{type: categorical, choices: [...]}")
    kind = raw.get("type")
    keys = {"float": ("type", "low", "high", "log", "step"), "int": ("type", "low", "high", "log", "step"),
            "categorical": ("type", "choices")}
    if kind not in keys:
        raise SpecError(f"{where}.type", kind, "one of float, int, categorical")
    for k in raw:
        if k not in keys[kind]:
            raise SpecError(f"{where}.{k}", k, f"one of {', '.join(keys[kind])} for type {kind} (unknown key)")
    if kind == "categorical":
        ch = raw.get("choices")
        if not isinstance(ch, list) or not ch:
            raise SpecError(f"{where}.choices", ch, "a non-empty list of values")
        for i, c in enumerate(ch):
            if not (c is None or isinstance(c, (bool, int, float, str))):
                raise SpecError(f"{where}.choices[{i}]", c, "None, a bool, a number or a string (optuna's rule; "
                                                            "use a string name for structured choices)")
        return Param(path, kind, choices=list(ch))
    low, high, log, step = raw.get("low"), raw.get("high"), raw.get("log", False), raw.get("step")
    for k, v in (("low", low), ("high", high)):
        if not _num(v) or (kind == "int" and not isinstance(v, int)):
            raise SpecError(f"{where}.{k}", v, "an integer" if kind == "int" else "a finite number")
    if not low < high:
        raise SpecError(f"{where}.high", high, f"a number > low ({low})")
    if not isinstance(log, bool):
        raise SpecError(f"{where}.log", log, "true or false")
    if log and low <= 0:
        raise SpecError(f"{where}.low", low, "a number > 0 with log: true")
    if step is not None:
        if not _num(step) or step <= 0 or (kind == "int" and not isinstance(step, int)):
            raise SpecError(f"{where}.step", step, "a positive " + ("integer" if kind == "int" else "number"))
        if log and (kind == "float" or step != 1):
            raise SpecError(f"{where}.step", step, "no step with log: true (optuna does not combine them)")
    return Param(path, kind, low=low, high=high, log=log, step=step)


def _opt_int(raw: dict, key: str, where: str, lo: int, default: Any) -> Any:
    v = raw.get(key, default)
    if v is None and default is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise SpecError(f"{where}.{key}", v, f"an integer >= {lo}")
    return v


def _opt_bool(raw: dict, key: str, where: str, default: bool) -> bool:
    v = raw.get(key, default)
    if not isinstance(v, bool):
        raise SpecError(f"{where}.{key}", v, "true or false")
    return v


def _named_section(raw: dict, key: str, options: dict[str, Any], default: str) -> tuple[str, dict]:
    """`tune.<key>`: a name or {name, ...options of that name}; unknown names and options are SpecErrors."""
    sec = raw.get(key, {}) or {}
    if isinstance(sec, str):
        sec = {"name": sec}
    if not isinstance(sec, dict):
        raise SpecError(f"tune.{key}", sec, f"a name ({'|'.join(options)}) or a mapping with a name and its options")
    name = sec.get("name", default)
    if name not in options:
        raise SpecError(f"tune.{key}.name", name, f"one of {', '.join(options)}")
    for k in sec:
        if k != "name" and k not in options[name]:
            raise SpecError(f"tune.{key}.{k}", k, f"one of name{''.join(', ' + x for x in options[name])} for {name}")
    return name, sec


def parse_tune(raw: Any, spec_name: str, out: Path) -> TuneConfig:
    """Validate a spec's `tune:` mapping (errors name the field, the value and what is allowed)."""
    if not isinstance(raw, dict) or not raw:
        raise SpecError("tune", raw, "a mapping with a `params` search space (see `forgetbench tune --help`, "
                                     "README 'Scale-out')")
    raw = dict(raw)
    params_raw = dict(raw.pop("params", None) or {})
    for key in list(raw):  # dotted run paths directly under tune: are accepted as params too
        if "." in str(key) and str(key).split(".")[0] in RUN_HEADS + ("method",):
            params_raw[key] = raw.pop(key)
    for key in raw:
        if key not in TUNE_KEYS:
            raise SpecError(f"tune.{key}", key, f"one of {', '.join(TUNE_KEYS)}{suggest(str(key), list(TUNE_KEYS))} "
                                                "or a dotted run path (unknown key)")
    if not params_raw:
        raise SpecError("tune.params", None, "a non-empty mapping of dotted run paths to search spaces, e.g. "
                                             "train.optimizer.lr: {type: float, low: 1.0e-3, high: 0.3, log: true}")
    params = [_parse_param(str(k), v) for k, v in params_raw.items()]
    metric = raw.get("metric", "val_acc")
    if metric not in METRICS:
        raise SpecError("tune.metric", metric, f"one of {', '.join(METRICS)} (validation metrics: tuning never "
                                               "reads the test split)")
    direction = raw.get("direction", "maximize" if metric == "val_acc" else "minimize")
    if direction not in ("maximize", "minimize"):
        raise SpecError("tune.direction", direction, "maximize or minimize")
    n_trials = _opt_int(raw, "n_trials", "tune", 1, 20)
    workers = _opt_int(raw, "workers", "tune", 1, 1)
    executor = raw.get("executor", "local")
    if executor not in TUNE_EXECUTORS:
        raise SpecError("tune.executor", executor, f"one of {', '.join(TUNE_EXECUTORS)}")

    sname, s_raw = _named_section(raw, "sampler", SAMPLERS, "tpe")
    sampler: dict[str, Any] = {"name": sname, "seed": _opt_int(s_raw, "seed", "tune.sampler", 0, None)}
    if sname == "tpe":
        sampler.update(n_startup_trials=_opt_int(s_raw, "n_startup_trials", "tune.sampler", 0, 10),
                       multivariate=_opt_bool(s_raw, "multivariate", "tune.sampler", False),
                       constant_liar=_opt_bool(s_raw, "constant_liar", "tune.sampler", workers > 1))

    pname, p_raw = _named_section(raw, "pruner", PRUNERS, "median")
    pruner: dict[str, Any] = {"name": pname}
    if pname == "median":
        pruner.update(n_startup_trials=_opt_int(p_raw, "n_startup_trials", "tune.pruner", 0, 5),
                      n_warmup_steps=_opt_int(p_raw, "n_warmup_steps", "tune.pruner", 0, 0),
                      interval_steps=_opt_int(p_raw, "interval_steps", "tune.pruner", 1, 1))

    study_name = raw.get("study_name") or spec_name
    if not isinstance(study_name, str):
        raise SpecError("tune.study_name", study_name, "a string")
    storage = resolve_storage(raw.get("storage"), Path(out) / spec_name / TUNE_DIR, workers, executor)
    return TuneConfig(params=params, metric=metric, direction=direction, n_trials=n_trials, sampler=sampler,
                      pruner=pruner, storage=storage, workers=workers, executor=executor, study_name=study_name)


def resolve_storage(value: Any, tdir: Path, workers: int, executor: str) -> str:
    """The storage string: `sqlite:///ABS` / `journal:ABS` / an RDB URL, checked against the worker count."""
    many = workers > 1 or executor != "local"
    if value is None or value == "":
        tdir = tdir.resolve()
        return f"journal:{tdir / 'journal.log'}" if many else f"sqlite:///{tdir / 'study.db'}"
    allowed = "journal:PATH (a JournalFileBackend file, for many workers), sqlite:///PATH (one process) or an " \
              "RDB URL such as postgresql://user@host/db or mysql://..."
    if not isinstance(value, str):
        raise SpecError("tune.storage", value, allowed)
    if value.startswith("journal:"):
        path = value[len("journal:"):]
        if not path:
            raise SpecError("tune.storage", value, allowed)
        return f"journal:{Path(path).expanduser().resolve()}"
    if value.startswith("sqlite:"):
        if many:
            raise SpecError("tune.storage", value, "journal:PATH or a server RDB URL: SQLite is for one process "
                                                   f"(workers={workers}, executor={executor})")
        return value
    if "://" in value:
        return value
    raise SpecError("tune.storage", value, allowed)
