"""Typed configuration of one run (plain dataclasses) and a strict dict -> dataclass parser.

Every error is a SpecError naming the field path, the bad value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional, Union

from bench.registry import suggest


MAX_PATH_CHARS = 200     # a field path in a message (a hostile key can be megabytes long)
MAX_VALUE_CHARS = 200    # the bad value's repr in a message
MAX_ALLOWED_CHARS = 2000
SEED_LIMIT = 2**63 - 1   # seeds in [0, SEED_LIMIT): torch.manual_seed and the derived 63-bit streams take them


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 30] + f"... [{len(text) - limit + 30} more chars]"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 4, 8, 8, 8, 8
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = MAX_VALUE_CHARS, MAX_VALUE_CHARS, 60


def short_repr(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """repr(value) cut to `limit` characters, computed with bounded work (reprlib: nested and aliased values
    such as a YAML billion-laughs structure are never expanded)."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a value whose repr fails
        text = f"<{type(value).__name__}>"
    return _cut(text, limit)


class SpecError(ValueError):
    """A malformed spec: `path` is the dotted field path, `value` the bad value, `allowed` what would do.
    The message is bounded: path, value repr and allowed text are cut to a few hundred characters each."""

    def __init__(self, path: str, value: Any, allowed: str) -> None:
        self.path, self.value, self.allowed = path, value, allowed
        super().__init__(f"{_cut(str(path or '<spec>'), MAX_PATH_CHARS)}: got {short_repr(value)}; allowed: "
                         f"{_cut(str(allowed), MAX_ALLOWED_CHARS)}")


class StoreError(Exception):
    """A results store (--out, a status/results path, one of its files) that cannot be used: the message names it."""


def in_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False):
    """Field metadata that bounds a number; the message states the interval."""
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    text = f"a number in {left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
    if type(lo) is int and hi is None:   # an integer bound on a count: say it as such
        text = f"an integer {'>' if lo_open else '>='} {lo}"

    def check(v: float) -> bool:
        if lo is not None and (v < lo or (lo_open and v == lo)):
            return False
        if hi is not None and (v > hi or (hi_open and v == hi)):
            return False
        return True
    return {"check": check, "allowed": text}


def satisfies(check: Callable[[Any], bool], allowed: str) -> dict[str, Any]:
    """Field metadata for any other rule: `check(value)` must hold; `allowed` says what would."""
    return {"check": check, "allowed": allowed}


def each(meta: dict[str, Any]) -> dict[str, Any]:
    """Field metadata of a non-empty list whose every item satisfies `meta` (e.g. each(in_range(0.0, 1.0)))."""
    return satisfies(lambda v: bool(v) and all(meta["check"](x) for x in v), f"a non-empty list, each {meta['allowed']}")


def overrides_of(cls: type) -> dict[str, Any]:
    """Field metadata of a mapping that overrides fields of dataclass `cls` (e.g. KNOW's source task): parsed as
    `cls` at spec time, so a typo or a bad value is named under this field's path; the mapping itself is kept.
    A list of such mappings is checked item by item (path[i])."""
    return {"overrides_of": cls}


# ----------------------------------------------------------------------------------------------- data
@dataclass
class NoiseConfig:
    """Label noise on the training split (symmetric: uniform to other classes; asymmetric: the paper's pairs)."""
    kind: Literal["none", "symmetric", "asymmetric"] = "none"
    rate: float = field(default=0.0, metadata=in_range(0.0, 1.0, hi_open=True))


@dataclass
class DataConfig:
    """Which dataset, which part of it, and how it is split and corrupted."""
    name: str = "digits"
    root: Optional[str] = None              # folder or archive; None = the dataset's default location
    download: bool = False                  # run the real download code if files are missing
    classes: Optional[list[int]] = None     # keep only these classes (relabelled 0..k-1 in this order)
    train_per_class: Optional[Union[int, float]] = None  # int >= 1: count per class; float in (0, 1]: fraction
    test_per_class: Optional[Union[int, float]] = None
    val_fraction: float = field(default=0.1, metadata=in_range(0.0, 1.0, hi_open=True))  # held out from train
    test_split: Optional[float] = field(default=None, metadata=in_range(0.0, 1.0, hi_open=True))  # datasets with one split
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    seed: int = field(default=0, metadata=in_range(0, SEED_LIMIT, hi_open=True))  # data seed: subset, val split and noise (fixed across run seeds)


# ---------------------------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    """A registered model name (or `timm:<name>`) and its keyword arguments."""
    name: str = "small_cnn"
    kwargs: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- training
@dataclass
class OptimizerConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = field(default=0.1, metadata=in_range(0.0, lo_open=True))
    momentum: float = field(default=0.9, metadata=in_range(0.0, 1.0, hi_open=True))
    nesterov: bool = True
    weight_decay: float = field(default=5e-4, metadata=in_range(0.0))
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class ScheduleConfig:
    name: Literal["constant", "cosine", "step", "onecycle"] = "cosine"
    warmup_epochs: float = field(default=0.0, metadata=in_range(0.0))
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # step: fractions of training
    gamma: float = field(default=0.1, metadata=in_range(0.0, 1.0, lo_open=True))
    min_lr_ratio: float = field(default=0.0, metadata=in_range(0.0, 1.0))
    pct_start: float = field(default=0.25, metadata=in_range(0.0, 1.0, lo_open=True, hi_open=True))  # onecycle


@dataclass
class AugmentConfig:
    crop_padding: int = field(default=0, metadata=in_range(0))
    flip: bool = False


@dataclass
class TrainConfig:
    """The training recipe shared by every method of a run."""
    epochs: int = field(default=10, metadata=in_range(1))
    batch_size: int = field(default=128, metadata=in_range(1))
    eval_batch_size: int = field(default=1024, metadata=in_range(1))
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    label_smoothing: float = field(default=0.0, metadata=in_range(0.0, 1.0, hi_open=True))
    grad_clip: Optional[float] = field(default=None, metadata=in_range(0.0, lo_open=True))
    amp: bool = True              # bf16 autocast, CUDA only (ignored on CPU)
    channels_last: bool = True    # CUDA only
    checkpoint_every: int = field(default=1, metadata=in_range(0))  # epochs between resumable checkpoints; 0 = never
    record_predictions: bool = True   # base run: per-epoch softmax on val and test (float16), read by KF & co.
    keep_checkpoints: bool = True     # base run: every epoch's weights on disk (CPU), read by distilled/averaged KF


@dataclass
class MethodConfig:
    """A registered method name and its parameters (validated by the method's own Params dataclass)."""
    name: str                               # required: the engine knows no method by name
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    """The fully resolved configuration of one run; its canonical JSON hashes to the run id."""
    spec: str
    seed: int
    dataset: DataConfig
    model: ModelConfig
    method: MethodConfig
    train: TrainConfig
    device: str = "auto"


# ------------------------------------------------------------------------------------------ parsing
def parse(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass `cls` from plain data, rejecting unknown keys and wrong types with a SpecError."""
    if not isinstance(data, dict):
        raise SpecError(path, data, f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(cls))}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            sub = _join(path, str(key))
            raise SpecError(sub, key, f"one of {', '.join(fields)}{suggest(str(key), list(fields))} (unknown key)")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                raise SpecError(_join(path, name), None, "a value (this field is required)")
            continue
        sub = _join(path, name)
        value = _coerce(hints[name], data[name], sub)
        check = f.metadata.get("check")
        if check is not None and value is not None and not check(value):
            raise SpecError(sub, data[name], f.metadata["allowed"])
        if f.metadata.get("overrides_of") is not None:
            for i, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
                parse(f.metadata["overrides_of"], item, sub if i is None else f"{sub}[{i}]")
        kwargs[name] = value
    return cls(**kwargs)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise SpecError(path, value, f"one of {', '.join(map(repr, allowed))}{suggest(str(value), [str(a) for a in allowed])}")
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except SpecError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise SpecError(path, value, _type_name(tp))
    if origin is list:
        if not isinstance(value, list):
            raise SpecError(path, value, _type_name(tp))
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(path, value, "a mapping")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(path, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(path, value, "an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads `1e-3` (no dot) as a string: accept numeric strings
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                if not math.isfinite(number):
                    raise SpecError(path, value, "a finite number (not nan or inf)")
                return number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(path, value, "a number")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range
            raise SpecError(path, value, "a finite number") from None
        if not math.isfinite(number):
            raise SpecError(path, value, "a finite number (not nan or inf)")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(path, value, "a string")
        return value
    raise TypeError(f"unsupported field type {tp} at {path}")


def to_dict(obj: Any) -> Any:
    """Plain, JSON-ready dict of a (nested) config dataclass."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
