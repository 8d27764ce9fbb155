"""The `tune:` section of a spec: its search space, sampler, pruner, storage and workers, parsed and checked."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from bench.config import SpecError, in_range, parse, satisfies
from bench.registry import suggest


TUNE_KEYS = ("params", "metric", "direction", "n_trials", "sampler", "pruner", "storage", "workers", "executor",
             "study_name")
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


@dataclass
class TPESpec:
    """`tune.sampler` for name: tpe (optuna's TPESampler arguments, passed explicitly: optuna 5 changed defaults)."""
    seed: Optional[int] = field(default=None, metadata=in_range(0))
    n_startup_trials: int = field(default=10, metadata=in_range(0))
    multivariate: bool = False
    constant_liar: Optional[bool] = None       # default: true with several workers


@dataclass
class RandomSpec:
    seed: Optional[int] = field(default=None, metadata=in_range(0))


@dataclass
class MedianSpec:
    n_startup_trials: int = field(default=5, metadata=in_range(0))
    n_warmup_steps: int = field(default=0, metadata=in_range(0))
    interval_steps: int = field(default=1, metadata=in_range(1))


@dataclass
class NoPrunerSpec:
    pass


@dataclass
class TuneSpec:
    """The scalar fields of the `tune:` section (`params`, `sampler` and `pruner` are parsed beside it)."""
    metric: str = field(default="val_acc", metadata=satisfies(lambda m: m in ("val_acc", "val_loss"), (
        "one of val_acc, val_loss (validation metrics: tuning never reads the test split)")))
    direction: Optional[Literal["maximize", "minimize"]] = None   # default: maximize val_acc, minimize val_loss
    n_trials: int = field(default=20, metadata=in_range(1))
    workers: int = field(default=1, metadata=in_range(1))
    executor: Literal["local", "slurm", "submitit-local"] = "local"
    storage: Optional[str] = None
    study_name: Optional[str] = None


SAMPLER_SPECS = {"tpe": TPESpec, "random": RandomSpec}
PRUNER_SPECS = {"median": MedianSpec, "none": NoPrunerSpec}


def _named_section(raw: dict, key: str, options: dict[str, type], default: str) -> dict[str, Any]:
    """`tune.<key>`: a name or {name, ...options of that name}, the options parsed as that name's dataclass."""
    sec = raw.get(key, {}) or {}
    if isinstance(sec, str):
        sec = {"name": sec}
    if not isinstance(sec, dict):
        raise SpecError(f"tune.{key}", sec, f"a name ({'|'.join(options)}) or a mapping with a name and its options")
    sec = dict(sec)
    name = sec.pop("name", default)
    if name not in options:
        raise SpecError(f"tune.{key}.name", name, f"one of {', '.join(options)}{suggest(str(name), list(options))}")
    return {"name": name, **asdict(parse(options[name], sec, f"tune.{key}"))}


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
    spec = parse(TuneSpec, {k: v for k, v in raw.items() if k not in ("sampler", "pruner")}, "tune")
    direction = spec.direction or ("maximize" if spec.metric == "val_acc" else "minimize")
    sampler = _named_section(raw, "sampler", SAMPLER_SPECS, "tpe")
    if sampler.get("constant_liar", False) is None:
        sampler["constant_liar"] = spec.workers > 1
    pruner = _named_section(raw, "pruner", PRUNER_SPECS, "median")
    metric, n_trials, workers, executor = spec.metric, spec.n_trials, spec.workers, spec.executor
    study_name = spec.study_name or spec_name
    storage = resolve_storage(spec.storage, Path(out) / spec_name / TUNE_DIR, workers, executor)
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
