"""Sweep specs: YAML (safe-loaded) -> validated SweepSpec -> list of resolved RunConfigs with stable ids.

A spec crosses `datasets` x `models` x `methods` x `seeds` x every `grid` axis (dotted paths into the run
config, e.g. `dataset.noise.rate`, `train.optimizer.lr`, `method.params.window`), then adds `include` runs and
drops runs matching an `exclude` entry.
"""
from __future__ import annotations

import copy
import itertools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.config import (SEED_LIMIT, DataConfig, MethodConfig, ModelConfig, RunConfig, SpecError, TrainConfig,
                          parse, to_dict)
from bench.ids import canonical_json, run_id  # noqa: F401  (re-exported: the spec's run ids)
from bench.registry import suggest
from bench.tune.config import TuneConfig, parse_tune
from bench.slurm import parse_resources
from bench.names import check_dataset, check_method, check_model, method_params
from bench.checks import check_data, check_model as check_model_config

TOP_KEYS = ("name", "description", "seeds", "device", "datasets", "models", "methods", "train", "grid",
            "include", "exclude", "resources", "tune")
RUN_KEYS = ("seed", "device", "dataset", "model", "method", "train")

# Bounds on what a spec may ask for (checked before anything is expanded).
MAX_SPEC_BYTES = 1 << 20          # the YAML file (and each --set value)
MAX_ALIASES = 1000                # YAML alias uses (*name)
MAX_NODES = 1_000_000             # values in the spec with every alias expanded (a billion-laughs guard)
MAX_DEPTH = 64                    # nesting of mappings / lists
MAX_RUNS = 100_000                # runs of one spec; FORGETBENCH_MAX_RUNS overrides
NAME_RE = re.compile(r"[A-Za-z0-9-][A-Za-z0-9._-]{0,99}")
NAME_ALLOWED = ("a non-empty string usable as a folder name, 1 to 100 characters: ASCII letters, digits, '-', '_' "
                "and '.', not starting with '.' or '_'")


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
    try:
        if not path.is_file():
            raise SpecError("<file>", str(path), "an existing YAML spec file")
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError("<file>", str(path), f"a spec file of at most {MAX_SPEC_BYTES} bytes (this one has {size})")
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise SpecError("<file>", str(path), f"a readable file ({e.strerror or e})") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError("<file>", str(path), f"a spec file of at most {MAX_SPEC_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise SpecError("<file>", str(path), f"a UTF-8 text file (byte {e.start}, line {line}, is not UTF-8: "
                                             f"{data[e.start:e.start + 1]!r})") from None
    raw = safe_load(text, str(path))
    raw = apply_overrides(raw, overrides or [])
    return build_spec(raw)


# ------------------------------------------------------------------------------------------ bounded YAML
class _SpecLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects duplicate keys and counts alias uses (bounded: MAX_ALIASES)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.alias_uses = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.alias_uses += 1
            if self.alias_uses > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise SpecError(f"<yaml> line {mark.line + 1}", f"*{self.peek_event().anchor}",
                                f"at most {MAX_ALIASES} alias uses (*name) in a spec")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, str] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *x` merges, and explicit keys override merged ones (YAML merge semantics)
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # unhashable: SafeConstructor reports it
                mark = key_node.start_mark
                at = f"line {mark.line + 1}, column {mark.column + 1}"
                if key in seen:
                    raise SpecError(f"{key} ({at})", key, f"each key once per mapping (duplicate key; first at "
                                                          f"{seen[key]})")
                seen[key] = at
        return super().construct_mapping(node, deep=deep)


def safe_load(text: str, where: str = "<spec>", path: str = "<yaml>") -> Any:
    """yaml.safe_load with duplicate keys, alias counts, expanded size and nesting depth bounded (SpecErrors
    on `path`; `where` is the file or option the text came from)."""
    loader = _SpecLoader(text)
    try:
        raw = loader.get_single_data()
    except yaml.YAMLError as e:
        raise SpecError(path, where, f"valid YAML ({_yaml_problem(e)})") from None
    except RecursionError:
        raise SpecError(path, where, f"YAML nested at most {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()
    check_size(raw, path)
    return raw


def _yaml_problem(e: yaml.YAMLError) -> str:
    """One line: what PyYAML found and where (its own message spans several lines with source excerpts)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    text = f"{context}: {problem}" if context else str(problem)
    return " ".join(text.split()) + (f" at line {mark.line + 1}, column {mark.column + 1}" if mark else "")


def check_size(raw: Any, where: str = "<yaml>") -> None:
    """Values counted with every alias expanded (memoised per shared object, so a billion-laughs document costs
    a few steps per distinct node); recursive structures and deep nesting are rejected."""
    memo: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool, int]] = [(raw, False, 0)]
    while stack:
        obj, finished, depth = stack.pop()
        if not isinstance(obj, (list, dict)):
            continue
        children = list(obj.values()) if isinstance(obj, dict) else obj
        if finished:
            on_path.discard(id(obj))
            total = 1 + len(children) + sum(memo.get(id(c), 0) for c in children if isinstance(c, (list, dict)))
            memo[id(obj)] = total
            if total > MAX_NODES:
                raise SpecError(where, obj, f"a spec of at most {MAX_NODES} values with aliases expanded (this one "
                                            f"has more: an alias bomb?)")
            continue
        if id(obj) in memo:
            continue
        if depth > MAX_DEPTH:
            raise SpecError(where, obj, f"values nested at most {MAX_DEPTH} levels deep")
        on_path.add(id(obj))
        stack.append((obj, True, depth))
        for c in children:
            if isinstance(c, (list, dict)):
                if id(c) in on_path:
                    raise SpecError(where, "<recursive alias>", "a spec without recursive aliases (a value that "
                                                                "contains itself)")
                if id(c) not in memo:
                    stack.append((c, False, depth + 1))


def apply_overrides(raw: Any, overrides: list[str]) -> Any:
    """`train.epochs=3` style edits of the raw spec (values parsed as YAML)."""
    if not overrides:
        return raw
    if not isinstance(raw, dict):
        raise SpecError("<spec>", raw, "a mapping (the spec file) for --set to edit")
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise SpecError("--set", item, "KEY=VALUE with a dotted key, e.g. train.epochs=3")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts) or len(key) > 500:
            raise SpecError(f"--set {key}", item, "KEY=VALUE with a dotted key of non-empty names, e.g. "
                                                  "train.epochs=3")
        if len(value) > MAX_SPEC_BYTES:
            raise SpecError(f"--set {key}", f"{len(value)} characters", f"a value of at most {MAX_SPEC_BYTES} bytes")
        node = raw
        for i, p in enumerate(parts[:-1]):
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                where = ".".join(parts[:i + 1])
                raise SpecError(f"--set {key}", item, f"a path through mappings ({where} is "
                                                      f"{type(nxt).__name__}: set the whole value, e.g. "
                                                      f"--set {where}=[...])")
            node = nxt
        node[parts[-1]] = safe_load(value, item, f"--set {key}")
    check_size(raw, "--set")
    return raw


def build_spec(raw: Any) -> SweepSpec:
    """Validate a spec mapping and expand it into runs: header, axes, run count (before expansion), grid and
    include runs, exclude, resolution and dedup, then the resources / tune sections."""
    name, seeds, device = _header(raw)
    train = raw.get("train", {})
    parse(TrainConfig, train, "train")  # early, precise errors
    items = _base_items(raw)
    grid = _grid(raw)
    include = _list_of_mappings(raw, "include")
    _check_run_count(items, seeds, grid, include)
    raw_runs = _grid_runs(items, seeds, grid, device, train) + _include_runs(items, seeds, include, device, train)
    exclude = _list_of_mappings(raw, "exclude")
    runs = _resolve_runs(name, raw_runs, exclude)
    if not runs:
        raise SpecError("exclude" if exclude else "grid", exclude or grid, "a spec that leaves at least one run")
    resources = raw.get("resources", {}) or {}
    tune = raw.get("tune", {}) or {}
    for key, val in (("resources", resources), ("tune", tune)):
        if not isinstance(val, dict):
            raise SpecError(key, val, "a mapping")
    spec = SweepSpec(name=name, runs=runs, description=str(raw.get("description") or ""), resources=resources,
                     tune=tune, source=raw)
    _check_sections(spec)
    return spec


def _header(raw: Any) -> tuple[str, list[int], str]:
    """Top-level keys, name, seeds, device and description."""
    if not isinstance(raw, dict):
        raise SpecError("<spec>", raw, f"a mapping with keys {', '.join(TOP_KEYS)}")
    for key in raw:
        if key not in TOP_KEYS:
            raise SpecError(str(key), key, f"one of {', '.join(TOP_KEYS)}{suggest(str(key), list(TOP_KEYS))} (unknown key)")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise SpecError("name", name, NAME_ALLOWED)
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds:
        raise SpecError("seeds", seeds, "a non-empty list of integers")
    for i, s in enumerate(seeds):
        _check_seed(s, f"seeds[{i}]")
    if len(set(seeds)) != len(seeds):
        raise SpecError("seeds", seeds, "distinct integers")
    device = raw.get("device", "auto")
    _check_device(device, "device")
    description = raw.get("description", "")
    if not isinstance(description, (str, type(None))):
        raise SpecError("description", description, "a string")
    return name, seeds, device


def _base_items(raw: dict) -> dict[str, list[dict]]:
    """The datasets / models / methods axes, normalised and each entry parsed and name-checked."""
    axes = {"dataset": ("datasets", None, [{"name": "digits"}]), "model": ("models", "kwargs", [{"name": "small_cnn"}]),
            "method": ("methods", "params", None)}
    items = {}
    for axis, (section, extra, default) in axes.items():
        items[axis] = [_normalize_named(x, f"{section}[{i}]", extra)
                       for i, x in enumerate(_axis(raw, section, default=default))]
        for i, item in enumerate(items[axis]):
            _resolve_part(axis, item, f"{section}[{i}]")
    return items


def _grid(raw: dict) -> dict[str, list]:
    grid = raw.get("grid", {}) or {}
    if not isinstance(grid, dict):
        raise SpecError("grid", grid, "a mapping of dotted run paths (e.g. dataset.noise.rate) to lists of values")
    for key, values in grid.items():
        _check_run_path(str(key), f"grid.{key}")
        if not isinstance(values, list) or not values:
            raise SpecError(f"grid.{key}", values, "a non-empty list of values")
    return grid


def _list_of_mappings(raw: dict, key: str) -> list[dict]:
    """`include` / `exclude`: a list of non-empty mappings of dotted run paths to values."""
    entries = raw.get(key, []) or []
    if not isinstance(entries, list):
        raise SpecError(key, entries, "a list of mappings of dotted run paths to values")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry:
            raise SpecError(f"{key}[{i}]", entry, "a non-empty mapping of dotted run paths to values")
        for k in entry:
            _check_run_path(str(k), f"{key}[{i}].{k}")
    return entries


def _check_run_count(items: dict[str, list], seeds: list[int], grid: dict[str, list], include: list[dict]) -> None:
    """The cap on runs, computed from the axis lengths before anything is expanded."""
    n_runs = math.prod(len(v) for v in items.values()) * len(seeds) * math.prod(len(v) for v in grid.values()) \
        + sum(1 if "seed" in e else len(seeds) for e in include)
    if n_runs > max_runs():
        axes = [f"{len(items['dataset'])} datasets", f"{len(items['model'])} models",
                f"{len(items['method'])} methods", f"{len(seeds)} seeds"] + \
            [f"{len(v)} values of grid.{k}" for k, v in grid.items()]
        raise SpecError("grid" if grid else "seeds", f"{n_runs} runs", f"at most {max_runs()} runs per spec "
                        f"({' x '.join(axes)}; FORGETBENCH_MAX_RUNS raises the cap)")


def _grid_runs(items: dict[str, list], seeds: list[int], grid: dict[str, list], device: str,
               train: dict) -> list[tuple[str, dict]]:
    """datasets x models x methods x seeds x every grid axis, as (where it came from, raw run)."""
    out = []
    for d, m, meth, seed in itertools.product(*items.values(), seeds):
        base = {"seed": seed, "device": device, "dataset": d, "model": m, "method": meth, "train": copy.deepcopy(train)}
        for combo in itertools.product(*[[(k, v) for v in vals] for k, vals in grid.items()]):
            run = copy.deepcopy(base)
            for k, v in combo:
                set_path(run, k, copy.deepcopy(v))
            out.append((", ".join(f"grid.{k}={v!r}" for k, v in combo), run))
    return out


def _include_runs(items: dict[str, list], seeds: list[int], include: list[dict], device: str,
                  train: dict) -> list[tuple[str, dict]]:
    """Extra runs: the first dataset / model / method with the entry's paths set (all seeds unless it names one)."""
    out = []
    extra = {"dataset": None, "model": "kwargs", "method": "params"}
    for i, entry in enumerate(include):
        for seed in ([entry["seed"]] if "seed" in entry else seeds):
            run = copy.deepcopy({"seed": seed, "device": device, "dataset": items["dataset"][0],
                                 "model": items["model"][0], "method": items["method"][0], "train": train})
            for k, v in entry.items():
                if k in extra:
                    v = _normalize_named(v, f"include[{i}].{k}", extra[k])
                set_path(run, k, copy.deepcopy(v))
            out.append((f"include[{i}]", run))
    return out


def _resolve_runs(name: str, raw_runs: list[tuple[str, dict]], exclude: list[dict]) -> list[RunConfig]:
    """Parse every raw run, drop the excluded and the duplicates (same id); an exclude key no run has is an error."""
    runs: list[RunConfig] = []
    seen: set[str] = set()
    unused = {(i, k) for i, entry in enumerate(exclude) for k in entry}
    for where, r in raw_runs:
        run = resolve_run(name, r, where)
        resolved = to_dict(run)
        unused = {(i, k) for i, k in unused if not _has_path(resolved, k)}
        if any(all(_matches(resolved, k, v) for k, v in entry.items()) for entry in exclude):
            continue
        rid = run_id(run)
        if rid not in seen:
            seen.add(rid)
            runs.append(run)
    if unused:
        i, k = min(unused)
        raise SpecError(f"exclude[{i}].{k}", k, "a dotted path to a field of the resolved run config (e.g. "
                                                "dataset.noise.rate, method.params.<name>): no run has this field")
    return runs


def max_runs() -> int:
    try:
        return max(1, int(os.environ.get("FORGETBENCH_MAX_RUNS", MAX_RUNS)))
    except ValueError:
        raise SpecError("FORGETBENCH_MAX_RUNS", os.environ.get("FORGETBENCH_MAX_RUNS"), "an integer") from None


def _check_sections(spec: SweepSpec) -> None:
    """`resources:` and `tune:` are validated whatever the command (unknown keys are errors, not ignored)."""
    parse_resources(spec.resources)
    if spec.tune:
        cfg = parse_tune(spec.tune, spec.name, Path("results"))
        check_space(cfg, base_run_dict(spec), spec.name)


def _check_device(device: Any, path: str) -> None:
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu(:\d{1,4})?|cuda(:\d{1,4})?", device):
        raise SpecError(path, device, "'auto', 'cpu', 'cuda' or 'cuda:<index>'")


def _check_seed(seed: Any, path: str) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise SpecError(path, seed, "a non-negative integer below 2**63 - 1")


def _has_path(run: dict, key: str) -> bool:
    node: Any = run
    for p in key.split("."):
        if not isinstance(node, dict) or p not in node:
            return False
        node = node[p]
    return True


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


    cls = {"dataset": DataConfig, "model": ModelConfig, "method": MethodConfig}[axis]
    obj = parse(cls, item, path)
    if axis == "dataset":
        check_dataset(obj.name, f"{path}.name")
        check_data(obj, path)
    elif axis == "model":
        check_model(obj.name, f"{path}.name")
        check_model_config(obj, path)
    else:
        check_method(obj.name, f"{path}.name")
        obj.params = to_dict(method_params(obj.name, obj.params, f"{path}.params"))
    return obj


def resolve_run(spec_name: str, r: dict, where: str) -> RunConfig:
    """Parse one raw run into a typed RunConfig; errors name the grid/include entry that produced it."""
    try:
        seed = r["seed"]
        _check_seed(seed, "seed")
        _check_device(r["device"], "device")
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


# ------------------------------------------------------------------------------------ runs of the tuner
def base_run_dict(spec: SweepSpec) -> dict[str, Any]:
    """The spec's first run as a plain dict without its spec name: the base every tuning trial edits."""
    d = to_dict(spec.runs[0])
    d.pop("spec")
    return d


def run_with(base: dict[str, Any], spec_name: str, values: dict[str, Any]) -> RunConfig:
    """The base run with `values` (dotted path -> value) applied, fully validated (a RunConfig)."""
    d = copy.deepcopy(base)
    for k, v in values.items():
        set_path(d, k, copy.deepcopy(v))
    return resolve_run(spec_name, d, "tune.params")


def check_space(cfg: TuneConfig, base: dict[str, Any], spec_name: str) -> None:
    """Every bound / choice of the search space must give a valid run (a bad range fails now, not in trial 17)."""
    for p in cfg.params:
        probes = p.choices if p.type == "categorical" else [p.low, p.high]
        for v in probes:
            try:
                run_with(base, spec_name, {p.path: v})
            except SpecError as e:
                raise SpecError(f"tune.params.{p.path}", v, f"values that give a valid run ({e})") from None

