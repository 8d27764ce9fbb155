"""`forgetbench tune SPEC`: optuna search over a spec's `tune:` section, on the VALIDATION split only.

```yaml
tune:
  params:                               # dotted run paths -> search space (the spec's first run is the base)
    train.optimizer.lr: {type: float, low: 1.0e-3, high: 0.3, log: true}
    train.batch_size: {type: int, low: 32, high: 128, step: 32}
    train.optimizer.name: {type: categorical, choices: [sgd, adamw]}
  metric: val_acc                       # val_acc | val_loss (reported after every epoch)
  direction: maximize                   # maximize | minimize (default: maximize for val_acc, minimize for val_loss)
  n_trials: 20                          # exactly this many trials (pruned and failed ones count; trials lost
                                        # with a killed worker are marked FAIL and replaced)
  sampler: {name: tpe, seed: 0, n_startup_trials: 10, multivariate: false, constant_liar: true}  # | random
  pruner: {name: median, n_startup_trials: 5, n_warmup_steps: 0, interval_steps: 1}              # | none
  storage: null                         # default: sqlite in RESULTS/<spec>/tune/ for one worker, a journal file
                                        # there for several; journal:PATH; or an RDB URL (postgresql://...)
  workers: 1                            # parallel workers sharing the study
  executor: local                       # local (processes) | slurm | submitit-local (one job per worker)
  study_name: null                      # default: the spec name
```

Each trial trains the base model through the engine primitives (`load_splits`, `init_model`, `fit`) with a hook
that reports the validation metric every epoch (`trial.report`) and raises `optuna.TrialPruned` when the pruner
says so. The test split is dropped right after loading and never evaluated. Workers take trials with
`study.ask()` under a file lock (so the study gets exactly `n_trials`, numbered by the storage), and record their
host/pid (and SLURM job); at every ask, RUNNING trials whose worker is dead are marked FAIL (`stale`) so they are
neither left RUNNING forever nor counted. Results: `RESULTS/<spec>/tune/best.json` (best value and params, and
the `--set` overrides to apply them) and `tune.json` (storage, study, settings) for `forgetbench status`.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import socket
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.config import SpecError
from bench.registry import suggest
from bench.executors.base import threads_per_worker
from bench.store import atomic_write_json, read_json

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


# ------------------------------------------------------------------------------------------------ optuna
def _optuna():
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
    optuna = _optuna()
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
    optuna = _optuna()
    s = cfg.sampler
    seed = None if s.get("seed") is None else s["seed"] + worker
    if s["name"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s["n_startup_trials"],
                                      multivariate=s["multivariate"], constant_liar=s["constant_liar"])


def make_pruner(cfg: TuneConfig) -> Any:
    optuna = _optuna()
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


# ------------------------------------------------------------------------------------------------ runs
def base_run_dict(spec: Any) -> dict[str, Any]:
    from bench.config import to_dict
    d = to_dict(spec.runs[0])
    d.pop("spec")
    return d


def run_with(base: dict[str, Any], spec_name: str, values: dict[str, Any]) -> Any:
    """The base run with `values` (dotted path -> value) applied, fully validated (a RunConfig)."""
    from bench.spec import resolve_run, set_path
    d = copy.deepcopy(base)
    for k, v in values.items():
        set_path(d, k, copy.deepcopy(v))
    return resolve_run(spec_name, d, "tune.params")


def check_space(cfg: TuneConfig, base: dict[str, Any], spec_name: str) -> None:
    """Every bound / choice must give a valid run (so a bad range fails now, not in trial 17)."""
    for p in cfg.params:
        probes = p.choices if p.type == "categorical" else [p.low, p.high]
        for v in probes:
            try:
                run_with(base, spec_name, {p.path: v})
            except SpecError as e:
                raise SpecError(f"tune.params.{p.path}", v, f"values that give a valid run ({e})") from None


# ------------------------------------------------------------------------------------------------ objective
_SPLITS: dict[str, tuple[Any, Any, tuple[int, int, int]]] = {}


def _train_val(dataset: Any, device: Any) -> tuple[Any, Any, tuple[int, int, int]]:
    """(train, val, (num_classes, in_chans, img_size)) of a dataset config, kept per worker process. The test
    split is dropped here: tuning never reads it."""
    from bench.config import to_dict
    from bench.data import load_splits
    from bench.spec import canonical_json
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
    optuna = _optuna()
    from bench.device import resolve_device
    from bench.spec import run_id
    from bench.train import fit, init_model

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


# ------------------------------------------------------------------------------------------------ workers
def _proc_start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_identity() -> dict[str, Any]:
    pid = os.getpid()
    ident: dict[str, Any] = {"host": socket.gethostname(), "pid": pid, "start": _proc_start(pid)}
    if os.environ.get("SLURM_JOB_ID"):
        ident["slurm_job"] = os.environ["SLURM_JOB_ID"]
        ident["slurm_restart"] = os.environ.get("SLURM_RESTART_COUNT", "0")
    return ident


def worker_alive(w: dict[str, Any]) -> bool | None:
    """True / False when known, None when this machine cannot tell (another host, no SLURM)."""
    if w.get("host") == socket.gethostname() and w.get("pid"):
        start = _proc_start(int(w["pid"]))
        if start is None:
            return False
        try:
            if Path(f"/proc/{w['pid']}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        except OSError:
            return False
        return w.get("start") in (None, start)
    if w.get("slurm_job"):
        from bench.slurm import ACTIVE_STATES, available, scontrol_job
        if not available():
            return None
        info = scontrol_job(str(w["slurm_job"]))
        if not info or info.get("JobState") not in ACTIVE_STATES:
            return False
        return info.get("Restarts", "0") == str(w.get("slurm_restart", "0"))
    return None


def reap_stale(study: Any, storage: Any) -> list[int]:
    """Mark RUNNING trials of dead workers FAIL (user attr `stale`); return their numbers."""
    optuna = _optuna()
    reaped = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        w = t.user_attrs.get("worker")
        if isinstance(w, dict) and worker_alive(w) is False:
            storage.set_trial_user_attr(t._trial_id, STALE, f"worker {w.get('host')}:{w.get('pid')} died")
            try:
                storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            except Exception:  # finished meanwhile
                continue
            reaped.append(t.number)
    return reaped


def counted(trials: list[Any]) -> int:
    """Trials that count towards n_trials: all but those failed with a dead worker (they are replaced)."""
    return sum(1 for t in trials if STALE not in t.user_attrs)


def _lock(cfg: TuneConfig, tdir: Path):
    from filelock import FileLock
    return FileLock(str(tdir / f"{cfg.study_name}.ask.lock"))


class TuneWorker:
    """One worker of a study: ask (under a lock, up to n_trials) -> train -> tell, until the study is full.

    Picklable (for process pools and submitit); on SLURM it is checkpointable: a preempted worker marks its
    running trial failed-stale (it is replaced) and is requeued.
    """

    def __init__(self, cfg: TuneConfig, base: dict[str, Any], spec_name: str, tdir: str, index: int,
                 threads: int | None = None) -> None:
        self.cfg, self.base, self.spec_name, self.tdir, self.index = cfg, base, spec_name, str(tdir), index
        self.threads = threads
        self._storage: Any = None
        self._trial_id: int | None = None

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["_storage"], d["_trial_id"] = None, None
        return d

    def __call__(self) -> dict[str, int]:
        import torch
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            return self._loop()
        finally:
            torch.set_num_threads(before)  # one local worker runs in the caller's process

    def _loop(self) -> dict[str, int]:
        optuna = _optuna()
        cfg, tdir = self.cfg, Path(self.tdir)
        self._storage = storage = make_storage(cfg.storage)
        study = optuna.load_study(study_name=cfg.study_name, storage=storage, sampler=make_sampler(cfg, self.index),
                                  pruner=make_pruner(cfg))
        TS = optuna.trial.TrialState
        me = worker_identity()
        done = {"complete": 0, "pruned": 0, "failed": 0}
        while True:
            with _lock(cfg, tdir):
                for n in reap_stale(study, storage):
                    _say(f"worker {self.index}: trial {n} was RUNNING with a dead worker: marked FAIL ({STALE})")
                if counted(study.get_trials(deepcopy=False)) >= cfg.n_trials:
                    break
                trial = study.ask()
                trial.set_user_attr("worker", me)
                self._trial_id = trial._trial_id
            t0 = time.perf_counter()
            try:
                value = objective(trial, cfg, self.base, self.spec_name)
            except optuna.TrialPruned as e:
                study.tell(trial, state=TS.PRUNED)
                done["pruned"] += 1
                _say(f"worker {self.index}: trial {trial.number} {e} {trial.params}")
            except Exception as e:  # recorded, not fatal to the study
                trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}")
                study.tell(trial, state=TS.FAIL)
                done["failed"] += 1
                _say(f"worker {self.index}: trial {trial.number} failed: {type(e).__name__}: {e}")
            else:
                study.tell(trial, value)
                done["complete"] += 1
                _say(f"worker {self.index}: trial {trial.number} {cfg.metric}={value:.4f} {trial.params} "
                     f"({time.perf_counter() - t0:.1f} s)")
            self._trial_id = None
        write_best(study, cfg, tdir)
        return done

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """SLURM preemption / time limit: fail the running trial as stale (it is replaced), requeue the worker."""
        from submitit.helpers import DelayedSubmission
        if self._storage is not None and self._trial_id is not None:
            optuna = _optuna()
            try:
                self._storage.set_trial_user_attr(self._trial_id, STALE, "worker preempted")
                self._storage.set_trial_state_values(self._trial_id, optuna.trial.TrialState.FAIL)
            except Exception:
                pass
        return DelayedSubmission(self, *args, **kwargs)


def _say(msg: str) -> None:
    print(f"[tune {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _pool_worker(worker: TuneWorker) -> dict[str, int]:
    return worker()


def write_best(study: Any, cfg: TuneConfig, tdir: Path) -> dict[str, Any] | None:
    optuna = _optuna()
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        key = "stale" if STALE in t.user_attrs else t.state.name.lower()
        counts[key] = counts.get(key, 0) + 1
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return None
    best = study.best_trial
    out = {"study": cfg.study_name, "storage": cfg.storage, "metric": cfg.metric, "direction": cfg.direction,
           "best_value": best.value, "best_trial": best.number, "best_params": best.params,
           "set": [f"{k}={json.dumps(v)}" for k, v in best.params.items()], "trials": counts,
           "run_id": best.user_attrs.get("run_id")}
    atomic_write_json(Path(tdir) / "best.json", out)
    return out


# ------------------------------------------------------------------------------------------------ command
def run_tune(args: argparse.Namespace) -> int:
    from bench.spec import load_spec

    warn = check_optuna_version()
    if warn:
        print(f"forgetbench tune: warning: {warn}", file=sys.stderr)
    optuna = _optuna()
    spec = load_spec(args.spec, args.overrides)
    raw = dict(spec.tune or {})
    for key, attr in (("n_trials", "n_trials"), ("workers", "workers"), ("executor", "executor"),
                      ("storage", "storage")):
        if getattr(args, attr, None) is not None:
            raw[key] = getattr(args, attr)
    out = Path(args.out)
    cfg = parse_tune(raw, spec.name, out)
    detach = bool(getattr(args, "detach", False))
    if detach and cfg.executor == "local":
        raise SpecError("--detach", True, "only with tune.executor slurm or submitit-local")
    base = base_run_dict(spec)
    check_space(cfg, base, spec.name)
    tdir = (out / spec.name / TUNE_DIR).resolve()
    tdir.mkdir(parents=True, exist_ok=True)
    storage = make_storage(cfg.storage)
    study = optuna.create_study(study_name=cfg.study_name, storage=storage, direction=cfg.direction,
                                load_if_exists=True)
    if study.direction.name.lower() != cfg.direction:
        raise SpecError("tune.direction", cfg.direction, f"{study.direction.name.lower()} (the existing study "
                                                         f"{cfg.study_name!r} in {cfg.storage})")
    atomic_write_json(tdir / "tune.json", {"spec": spec.name, "study": cfg.study_name, "storage": cfg.storage,
                                           "config": asdict(cfg), "base_run": base})
    with _lock(cfg, tdir):
        for n in reap_stale(study, storage):
            print(f"trial {n} was RUNNING with a dead worker: marked FAIL ({STALE}); it will be replaced")
    have = counted(study.get_trials(deepcopy=False))
    if len(spec.runs) > 1:
        print(f"note: the spec has {len(spec.runs)} runs; tuning uses the first as the base run", file=sys.stderr)
    print(f"tune {spec.name}: study {cfg.study_name!r} in {cfg.storage}; {have}/{cfg.n_trials} trials exist; "
          f"{cfg.workers} {cfg.executor} worker(s); {cfg.metric} ({cfg.direction}); sampler {cfg.sampler}; "
          f"pruner {cfg.pruner}", flush=True)
    t0 = time.perf_counter()
    if have < cfg.n_trials:
        n = min(cfg.workers, cfg.n_trials - have)
        if cfg.executor == "local":
            threads = threads_per_worker(n)
            workers = [TuneWorker(cfg, base, spec.name, str(tdir), i, threads) for i in range(n)]
            if n == 1:
                workers[0]()
            else:
                import multiprocessing as mp
                from concurrent.futures import ProcessPoolExecutor
                with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn")) as pool:
                    list(pool.map(_pool_worker, workers))
        else:
            if not _submit_workers(cfg, spec, base, tdir, n, detach):
                return 0
    best = write_best(optuna.load_study(study_name=cfg.study_name, storage=storage), cfg, tdir)
    print(f"wall time {time.perf_counter() - t0:.1f} s")
    if best is None:
        print("no completed trial", file=sys.stderr)
        return 1
    print(f"best trial {best['best_trial']}: {cfg.metric}={best['best_value']:.4f} params {best['best_params']}\n"
          f"trials: {best['trials']}\napply with: " + " ".join(f"--set {s}" for s in best["set"]) +
          f"\nwritten: {tdir / 'best.json'}")
    return 0


def _submit_workers(cfg: TuneConfig, spec: Any, base: dict, tdir: Path, n: int, detach: bool) -> bool:
    """Workers as submitit jobs (slurm: one array); True when they finished (waited), False when detached."""
    import submitit

    from bench.slurm import parse_resources, slurm_executor_params, squeue_states
    res = parse_resources(spec.resources)
    folder = tdir / "_submitit"
    if cfg.executor == "slurm":
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=res.max_timeouts)
        ex.update_parameters(**slurm_executor_params(res, job_name=f"fb-tune-{spec.name}"))
        threads = res.cpus
    else:
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=res.max_timeouts)
        ex.update_parameters(timeout_min=res.time_min, signal_delay_s=res.signal_delay_s)
        threads = threads_per_worker(n)
    payloads = [_CheckpointableWorker(cfg, base, spec.name, str(tdir), i, threads) for i in range(n)]
    with ex.batch():
        jobs = [ex.submit(p) for p in payloads]
    ids = [str(j.job_id) for j in jobs]
    rec = read_json(tdir / "jobs.json") or {"submissions": []}
    rec["submissions"].append({"executor": cfg.executor, "jobs": [{"job_id": i, "stdout": str(j.paths.stdout),
                                                                   "stderr": str(j.paths.stderr)}
                                                                  for i, j in zip(ids, jobs)],
                               "host": socket.gethostname(), "submitted_at": time.time()})
    atomic_write_json(tdir / "jobs.json", rec)
    print(f"submitted {n} tune worker job(s): {', '.join(ids)}; logs in {folder}", flush=True)
    if detach:
        print(f"detached: follow with `forgetbench status {tdir.parent}`", flush=True)
        return False
    while True:
        if cfg.executor == "slurm":
            try:
                alive = squeue_states(ids)
            except RuntimeError:
                alive = {}
            if not alive:
                break
        elif all(j.get_info().get("jobState") != "RUNNING" for j in jobs):
            break
        time.sleep(1.0)
    return True


try:
    from submitit.helpers import Checkpointable as _Checkpointable

    class _CheckpointableWorker(TuneWorker, _Checkpointable):
        """TuneWorker as a submitit Checkpointable (requeued on preemption / time limit)."""
except ImportError:  # pragma: no cover - the slurm extra is missing
    _CheckpointableWorker = TuneWorker  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------ status
def study_dirs(root: Path) -> list[Path]:
    """Tune folders (with tune.json) at or under `root` (root, root/tune, root/*/tune)."""
    root = Path(root)
    cands = [root, root / TUNE_DIR, *sorted(root.glob(f"*/{TUNE_DIR}"))] if root.is_dir() else []
    seen, out = set(), []
    for c in cands:
        if (c / "tune.json").is_file() and c.resolve() not in seen:
            seen.add(c.resolve())
            out.append(c)
    return out


def tune_status(tdir: Path) -> list[str]:
    info = read_json(Path(tdir) / "tune.json") or {}
    head = f"tune {info.get('spec', '?')}: study {info.get('study')!r} in {info.get('storage')}"
    try:
        optuna = _optuna()
        storage = make_storage(info["storage"])
        study = optuna.load_study(study_name=info["study"], storage=storage)
        trials = study.get_trials(deepcopy=False)
    except Exception as e:
        return [f"{head}: cannot read the study ({type(e).__name__}: {e})"]
    counts: dict[str, int] = {}
    for t in trials:
        key = "stale" if STALE in t.user_attrs else t.state.name.lower()
        counts[key] = counts.get(key, 0) + 1
    n_trials = (info.get("config") or {}).get("n_trials")
    lines = [f"{head}: {counted(trials)}/{n_trials} trials " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))]
    best = read_json(Path(tdir) / "best.json")
    if best:
        lines.append(f"  best trial {best['best_trial']}: {best['metric']}={best['best_value']:.4f} "
                     f"{best['best_params']}")
    for sub in (read_json(Path(tdir) / "jobs.json") or {}).get("submissions", []):
        from bench.executors.submitit import job_states
        states = job_states(sub)
        for j in sub["jobs"]:
            if states.get(j["job_id"]) in ("running", "queued"):
                lines.append(f"  {sub['executor']} worker job {j['job_id']} [{states[j['job_id']]}]\n"
                             f"    log: {j['stdout']}\n    err: {j['stderr']}")
    return lines
