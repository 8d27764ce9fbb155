"""Sweep specs: YAML (safe-loaded) -> validated SweepSpec -> list of resolved RunConfigs with stable ids.

A spec crosses `datasets` x `models` x `methods` x `seeds` x every `grid` axis (dotted paths into the run
config, e.g. `dataset.noise.rate`, `train.optimizer.lr`, `method.params.window`), then adds `include` runs and
drops runs matching an `exclude` entry.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.config import (DataConfig, MethodConfig, ModelConfig, RunConfig, SpecError, TrainConfig, parse,
                          to_dict)
from bench.ids import canonical_json, run_id  # noqa: F401  (re-exported: the spec's run ids)
from bench.registry import suggest

TOP_KEYS = ("name", "description", "seeds", "device", "datasets", "models", "methods", "train", "grid",
            "include", "exclude", "resources", "tune")
RUN_KEYS = ("seed", "device", "dataset", "model", "method", "train")


@dataclass
class SweepSpec:
    """A validated spec: its expanded runs plus the sections executors and tuners read."""
    name: str
    runs: list[RunConfig]
    description: str = ""
    resources: dict[str, Any] = field(default_factory=dict)
    tune: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)


def load_spec(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read and validate a YAML spec file; `overrides` are `dotted.key=yaml_value` strings applied first."""
    path = Path(path)
    if not path.is_file():
        raise SpecError("<file>", str(path), "an existing YAML spec file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpecError("<yaml>", str(path), f"valid YAML ({e})") from None
    raw = apply_overrides(raw, overrides or [])
    return build_spec(raw)


def apply_overrides(raw: Any, overrides: list[str]) -> Any:
    """`train.epochs=3` style edits of the raw spec (values parsed as YAML)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise SpecError("--set", item, "KEY=VALUE with a dotted key, e.g. train.epochs=3")
        key, value = item.split("=", 1)
        node = raw
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node, dict):
                raise SpecError(f"--set {key}", item, "a path through mappings")
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def build_spec(raw: Any) -> SweepSpec:
    """Validate a spec mapping and expand it into runs."""
    if not isinstance(raw, dict):
        raise SpecError("<spec>", raw, f"a mapping with keys {', '.join(TOP_KEYS)}")
    for key in raw:
        if key not in TOP_KEYS:
            raise SpecError(str(key), key, f"one of {', '.join(TOP_KEYS)}{suggest(str(key), list(TOP_KEYS))} (unknown key)")
    name = raw.get("name")
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name):
        raise SpecError("name", name, "a non-empty string of letters, digits, '-', '_', '.'")
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds:
        raise SpecError("seeds", seeds, "a non-empty list of integers")
    for i, s in enumerate(seeds):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise SpecError(f"seeds[{i}]", s, "a non-negative integer")
    if len(set(seeds)) != len(seeds):
        raise SpecError("seeds", seeds, "distinct integers")
    device = raw.get("device", "auto")
    if not isinstance(device, str):
        raise SpecError("device", device, "a string: auto, cpu, cuda or cuda:N")

    datasets = _axis(raw, "datasets", default=[{"name": "digits"}])
    models = _axis(raw, "models", default=[{"name": "small_cnn"}])
    methods = _axis(raw, "methods", default=None)
    train = raw.get("train", {})
    parse(TrainConfig, train, "train")  # early, precise errors

    base_items = {
        "dataset": [_normalize_named(d, f"datasets[{i}]", None) for i, d in enumerate(datasets)],
        "model": [_normalize_named(m, f"models[{i}]", "kwargs") for i, m in enumerate(models)],
        "method": [_normalize_named(m, f"methods[{i}]", "params") for i, m in enumerate(methods)],
    }
    for axis, section in (("dataset", "datasets"), ("model", "models"), ("method", "methods")):
        for i, item in enumerate(base_items[axis]):
            _resolve_part(axis, item, f"{section}[{i}]")
    grid = raw.get("grid", {}) or {}
    if not isinstance(grid, dict):
        raise SpecError("grid", grid, "a mapping of dotted run paths (e.g. dataset.noise.rate) to lists of values")
    for key, values in grid.items():
        _check_run_path(str(key), f"grid.{key}")
        if not isinstance(values, list) or not values:
            raise SpecError(f"grid.{key}", values, "a non-empty list of values")

    raw_runs: list[tuple[str, dict]] = []
    for d, m, meth, seed in itertools.product(*base_items.values(), seeds):
        base = {"seed": seed, "device": device, "dataset": d, "model": m, "method": meth, "train": copy.deepcopy(train)}
        for combo in itertools.product(*[[(k, v) for v in vals] for k, vals in grid.items()]):
            run = copy.deepcopy(base)
            where = []
            for k, v in combo:
                set_path(run, k, copy.deepcopy(v))
                where.append(f"grid.{k}={v!r}")
            raw_runs.append((", ".join(where), run))

    include = raw.get("include", []) or []
    if not isinstance(include, list):
        raise SpecError("include", include, "a list of mappings of dotted run paths to values")
    for i, entry in enumerate(include):
        if not isinstance(entry, dict) or not entry:
            raise SpecError(f"include[{i}]", entry, "a non-empty mapping of dotted run paths to values")
        for k in entry:
            _check_run_path(str(k), f"include[{i}].{k}")
        entry_seeds = [entry["seed"]] if "seed" in entry else seeds
        for seed in entry_seeds:
            run = {"seed": seed, "device": device, "dataset": base_items["dataset"][0], "model": base_items["model"][0],
                   "method": base_items["method"][0], "train": copy.deepcopy(train)}
            run = copy.deepcopy(run)
            for k, v in entry.items():
                if k in ("dataset", "model", "method"):
                    v = _normalize_named(v, f"include[{i}].{k}", {"dataset": None, "model": "kwargs", "method": "params"}[k])
                set_path(run, k, copy.deepcopy(v))
            raw_runs.append((f"include[{i}]", run))

    exclude = raw.get("exclude", []) or []
    if not isinstance(exclude, list):
        raise SpecError("exclude", exclude, "a list of mappings of dotted run paths to values")
    for i, entry in enumerate(exclude):
        if not isinstance(entry, dict) or not entry:
            raise SpecError(f"exclude[{i}]", entry, "a non-empty mapping of dotted run paths to values")
        for k in entry:
            _check_run_path(str(k), f"exclude[{i}].{k}")

    runs: list[RunConfig] = []
    seen: set[str] = set()
    for where, r in raw_runs:
        run = resolve_run(name, r, where)
        resolved = to_dict(run)
        if any(all(_matches(resolved, k, v) for k, v in entry.items()) for entry in exclude):
            continue
        rid = run_id(run)
        if rid not in seen:
            seen.add(rid)
            runs.append(run)
    if not runs:
        raise SpecError("exclude" if exclude else "grid", exclude or grid, "a spec that leaves at least one run")
    resources = raw.get("resources", {}) or {}
    tune = raw.get("tune", {}) or {}
    for key, val in (("resources", resources), ("tune", tune)):
        if not isinstance(val, dict):
            raise SpecError(key, val, "a mapping")
    return SweepSpec(name=name, runs=runs, description=str(raw.get("description", "")), resources=resources,
                     tune=tune, source=raw)


# ------------------------------------------------------------------------------------------ helpers
def _axis(raw: dict, key: str, default: list | None) -> list:
    if key not in raw:
        if default is None:
            raise SpecError(key, None, f"a non-empty list of {key} (this field is required)")
        return default
    value = raw[key]
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise SpecError(key, value, f"a non-empty list of {key} (names or mappings with a 'name')")
    return value


def _normalize_named(item: Any, path: str, extra: str | None) -> dict:
    """'name' or {name, ...}: for models/methods, keys other than name go into kwargs/params."""
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise SpecError(f"{path}.name" if isinstance(item, dict) else path, item,
                        "a name string or a mapping with a string 'name'")
    item = copy.deepcopy(item)
    if extra is None:
        return item
    out = {"name": item.pop("name")}
    explicit = item.pop(extra, None)
    if explicit is not None and not isinstance(explicit, dict):
        raise SpecError(f"{path}.{extra}", explicit, "a mapping")
    out[extra] = {**(explicit or {}), **item}
    return out


def _check_run_path(key: str, where: str) -> None:
    head = key.split(".")[0]
    if head not in RUN_KEYS:
        raise SpecError(where, key, f"a dotted path starting with one of {', '.join(RUN_KEYS)}{suggest(head, list(RUN_KEYS))}")


def set_path(run: dict, key: str, value: Any) -> None:
    """Set the dotted `key` of a raw run dict (creating mappings on the way)."""
    parts = key.split(".")
    node = run
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise SpecError(key, nxt, "a path through mappings")
        node = nxt
    node[parts[-1]] = value


def _matches(run: dict, key: str, value: Any) -> bool:
    node: Any = run
    for p in key.split("."):
        if not isinstance(node, dict) or p not in node:
            return False
        node = node[p]
    return node == value or (isinstance(node, float) and not isinstance(value, bool) and isinstance(value, int) and node == float(value))


def _resolve_part(axis: str, item: dict, path: str) -> Any:
    """Parse and name-check one dataset / model / method entry; errors carry `path`."""
    from bench.names import check_dataset, check_method, check_model, method_params

    cls = {"dataset": DataConfig, "model": ModelConfig, "method": MethodConfig}[axis]
    obj = parse(cls, item, path)
    if axis == "dataset":
        check_dataset(obj.name, f"{path}.name")
    elif axis == "model":
        check_model(obj.name, f"{path}.name")
    else:
        check_method(obj.name, f"{path}.name")
        obj.params = to_dict(method_params(obj.name, obj.params, f"{path}.params"))
    return obj


def resolve_run(spec_name: str, r: dict, where: str) -> RunConfig:
    """Parse one raw run into a typed RunConfig; errors name the grid/include entry that produced it."""
    try:
        seed = r["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SpecError("seed", seed, "a non-negative integer")
        data = _resolve_part("dataset", r["dataset"], "dataset")
        model = _resolve_part("model", r["model"], "model")
        method = _resolve_part("method", r["method"], "method")
        train = parse(TrainConfig, r["train"], "train")
    except SpecError as e:
        if where:
            raise SpecError(f"{e.path} (from {where})", e.value, e.allowed) from None
        raise
    return RunConfig(spec=spec_name, seed=seed, dataset=data, model=model, method=method, train=train,
                     device=r["device"])
