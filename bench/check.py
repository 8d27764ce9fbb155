"""`forgetbench check`: a regression gate of a sweep against committed targets.

The sweep is run (finished runs are reused), its runs are grouped by (setting, method, metric), where the setting is
the run's resolved config without the seed (and without the method, which is its own column), and the mean and
sample std over seeds are compared with the targets file:

```yaml
generated: {git_sha: ..., date: ..., versions: {...}, machine: {...}, executor: local, workers: 2}
notes: free text, e.g. why the tolerances are what they are (kept by --update-targets)
tolerance: {abs_floor: 0.002, k: 3.0}          # |measured - target| <= max(abs_floor, k * target std)
metric_tolerance: {forgetting_bpc: {abs_floor: 0.01}}   # optional per-metric override of the defaults
metrics:            # what is gated, per method name; else the paper's headline metrics; else `default`
  default: [test_acc]
  some_method: [metric_a, metric_b]
targets:
  - {setting: digits/small_cnn, method: naive, metric: test_acc, mean: 0.9, std: 0.01, n: 2, config: 3f2a..}
    # optional per entry: abs_floor, k, git_sha
verdicts:                                       # the claims engine's supported verdicts, pinned by --update-targets
  - {paper: forgetmenot, claim: kf_inf_vs_naive, setting: "dataset=digits, model=small_cnn", verdict: supported}
```

Labels: `setting` is `<dataset>[classes]/<model>`, with `{field=value,...}` appended for the config fields that tell
apart settings sharing that label; `method` is the method name, with `{param=value}` appended likewise when one
setting runs a method with several parameter sets. `config` (a hash of the config without the seed and the spec
name) is informational: when it differs the row notes that the setting changed since the target.

Exit status: 0 all rows pass, 1 any row fails (a target without a measured value is a failure: "missing"),
2 bad input (CheckInputError: a missing or malformed targets file, naming the field).

Hook for a claims / verdict engine (optional, not part of the engine): if the module `report.verdicts` exists, its
`verdict_table(spec_dir)` (or else `verdict_frame(verdicts(load_runs(spec_dir)))`) is printed after the table; if
it has `check_verdicts(spec_dir, targets_verdicts)` returning a list of failure messages (e.g. a claim that was
`supported` in the targets' `verdicts:` section and no longer is), those fail the gate too; `--update-targets`
pins its `supported_verdicts(spec_dir)`. Missing module, or an error inside it: skipped, with a note.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from xml.sax.saxutils import escape, quoteattr

import yaml

from bench.config import RunConfig, to_dict
from bench.executors import EXECUTORS
from bench.ids import digest, run_id
from bench.paper import papers
from bench.provenance import git_sha, library_versions, machine_info
from bench.spec import load_spec
from bench.store import RESULT, read_json, register_sweep

DEFAULT_ABS_FLOOR = 0.002
DEFAULT_K = 3.0
TOP_KEYS = ("generated", "notes", "tolerance", "metric_tolerance", "metrics", "targets", "verdicts")
ENTRY_KEYS = ("setting", "method", "metric", "mean", "std", "n", "config", "abs_floor", "k", "git_sha")


class CheckInputError(ValueError):
    """Bad input of `check`: `where` names the file and field."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        super().__init__(f"{where}: {message}")


# ------------------------------------------------------------------------------------------ targets file
@dataclass
class Targets:
    path: Path
    generated: dict[str, Any] = field(default_factory=dict)
    abs_floor: float = DEFAULT_ABS_FLOOR
    k: float = DEFAULT_K
    metric_tolerance: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics: dict[str, list[str]] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    verdicts: Any = None
    notes: Any = None          # free text (why the tolerances are what they are), kept by --update-targets

    def tolerance(self, entry: dict[str, Any]) -> tuple[float, float]:
        """(abs_floor, k) of an entry: its own, else its metric's, else the file's defaults."""
        per_metric = self.metric_tolerance.get(entry["metric"], {})
        floor = entry.get("abs_floor", per_metric.get("abs_floor", self.abs_floor))
        k = entry.get("k", per_metric.get("k", self.k))
        return float(floor), float(k)


def _number(value: Any, where: str, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(float(value)):
        raise CheckInputError(where, f"got {value!r}; expected a number")
    if minimum is not None and value < minimum:
        raise CheckInputError(where, f"got {value!r}; expected a number >= {minimum}")
    return float(value)


def _tolerance_section(raw: Any, where: str) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise CheckInputError(where, f"got {raw!r}; expected a mapping with abs_floor and/or k")
    out = {}
    for key, val in raw.items():
        if key not in ("abs_floor", "k"):
            raise CheckInputError(f"{where}.{key}", "unknown key; allowed: abs_floor, k")
        out[key] = _number(val, f"{where}.{key}", minimum=0.0)
    return out


def load_targets(path: str | Path) -> Targets:
    """Read and validate a targets file (YAML or JSON); CheckInputError names the bad field."""
    path = Path(path)
    if not path.is_file():
        raise CheckInputError(str(path), "no such targets file (write one with --update-targets)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CheckInputError(str(path), f"not valid YAML/JSON ({e})") from None
    if not isinstance(raw, dict):
        raise CheckInputError(str(path), f"expected a mapping with keys {', '.join(TOP_KEYS)}")
    for key in raw:
        if key not in TOP_KEYS:
            raise CheckInputError(f"{path}: {key}", f"unknown key; allowed: {', '.join(TOP_KEYS)}")
    t = Targets(path=path, generated=raw.get("generated") or {}, verdicts=raw.get("verdicts"), notes=raw.get("notes"))
    if not isinstance(t.generated, dict):
        raise CheckInputError(f"{path}: generated", "expected a mapping")
    tol = _tolerance_section(raw.get("tolerance") or {}, f"{path}: tolerance")
    t.abs_floor, t.k = tol.get("abs_floor", DEFAULT_ABS_FLOOR), tol.get("k", DEFAULT_K)
    mt = raw.get("metric_tolerance") or {}
    if not isinstance(mt, dict):
        raise CheckInputError(f"{path}: metric_tolerance", "expected a mapping of metric -> {abs_floor, k}")
    t.metric_tolerance = {str(m): _tolerance_section(v, f"{path}: metric_tolerance.{m}") for m, v in mt.items()}
    metrics = raw.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise CheckInputError(f"{path}: metrics", "expected a mapping of method name (or default) -> metric list")
    for m, lst in metrics.items():
        if isinstance(lst, str):
            lst = [lst]
        if not isinstance(lst, list) or not all(isinstance(x, str) for x in lst):
            raise CheckInputError(f"{path}: metrics.{m}", f"got {lst!r}; expected a list of metric names")
        t.metrics[str(m)] = list(lst)
    entries = raw.get("targets")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise CheckInputError(f"{path}: targets", "expected a list of entries")
    seen = set()
    for i, e in enumerate(entries):
        where = f"{path}: targets[{i}]"
        if not isinstance(e, dict):
            raise CheckInputError(where, f"got {e!r}; expected a mapping with setting, method, metric, mean, std")
        for key in e:
            if key not in ENTRY_KEYS:
                raise CheckInputError(f"{where}.{key}", f"unknown key; allowed: {', '.join(ENTRY_KEYS)}")
        for key in ("setting", "method", "metric"):
            if not isinstance(e.get(key), str) or not e[key]:
                raise CheckInputError(f"{where}.{key}", f"got {e.get(key)!r}; expected a non-empty string")
        entry = {k: e[k] for k in ("setting", "method", "metric")}
        entry["mean"] = _number(e.get("mean"), f"{where}.mean")
        entry["std"] = _number(e.get("std", 0.0), f"{where}.std", minimum=0.0)
        if "n" in e:
            entry["n"] = int(_number(e["n"], f"{where}.n", minimum=0))
        for key in ("abs_floor", "k"):
            if key in e:
                entry[key] = _number(e[key], f"{where}.{key}", minimum=0.0)
        for key in ("config", "git_sha"):
            if key in e:
                entry[key] = str(e[key])
        key3 = (entry["setting"], entry["method"], entry["metric"])
        if key3 in seen:
            raise CheckInputError(where, f"duplicate target {'/'.join(key3)}")
        seen.add(key3)
        t.entries.append(entry)
    return t


# ------------------------------------------------------------------------------------------ measuring
def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def _fmt_value(v: Any) -> str:
    return v if isinstance(v, str) else yaml.safe_dump(v, default_flow_style=True, width=10 ** 6).strip()


def _distinguish(base: str, variants: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Labels for several flattened configs sharing the label `base`: the fields whose values differ."""
    if len(variants) == 1:
        return {h: base for h in variants}
    keys = sorted({k for flat in variants.values() for k in flat})
    differing = [k for k in keys if len({repr(flat.get(k)) for flat in variants.values()}) > 1]
    out = {}
    for h, flat in variants.items():
        out[h] = base + "{" + ",".join(f"{k}={_fmt_value(flat.get(k))}" for k in differing) + "}"
    return out


def setting_labels(runs: list[RunConfig]) -> dict[str, tuple[str, str, str]]:
    """run id -> (setting label, method label, config hash), unique within `runs`."""
    info = {}
    settings: dict[str, dict[str, dict[str, Any]]] = {}   # base label -> setting hash -> flattened setting
    for r in runs:
        d = to_dict(r)
        d.pop("seed")
        d.pop("spec")
        config_hash = digest(d, 10)
        method = d.pop("method")
        s_hash = digest(d, 10)
        ds = d["dataset"]
        base = ds["name"] + (f"[{','.join(map(str, ds['classes']))}]" if ds.get("classes") else "") \
            + "/" + d["model"]["name"]
        settings.setdefault(base, {})[s_hash] = _flatten(d)
        info[run_id(r)] = (base, s_hash, method, config_hash)
    s_label = {}
    for base, variants in settings.items():
        s_label.update(_distinguish(base, variants))
    methods: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for base, s_hash, method, _ in info.values():
        methods.setdefault((s_label[s_hash], method["name"]), {})[digest(method, 10)] = _flatten(method["params"])
    m_label = {}
    for (sl, name), variants in methods.items():
        for h, lab in _distinguish(name, variants).items():
            m_label[(sl, h)] = lab
    return {rid: (s_label[s_hash], m_label[(s_label[s_hash], digest(method, 10))], config_hash)
            for rid, (base, s_hash, method, config_hash) in info.items()}


@dataclass
class Measured:
    setting: str
    method: str
    metric: str
    values: list[float]
    config: str
    seeds: list[int]
    failed: list[str] = field(default_factory=list)   # "run_id: reason" of this group's failed runs

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else float("nan")

    @property
    def std(self) -> float:
        n = len(self.values)
        if n < 2:
            return 0.0
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (n - 1))


def paper_metrics(method: str) -> list[str] | None:
    """The headline metrics of the paper (bench.paper registry) whose rows include `method`, or None."""
    for p in papers():
        if p.owns(method):
            return list(p.metrics)
    return None


def gated_metrics(method: str, metrics: dict[str, list[str]]) -> list[str]:
    """Metrics gated for `method`: the targets file's `metrics.<method>`, else its paper's headline metrics, else
    the file's `metrics.default`, else test_acc."""
    if method in metrics:
        return metrics[method]
    return paper_metrics(method) or metrics.get("default") or ["test_acc"]


def measure(runs: list[RunConfig], spec_dir: Path, metrics: dict[str, list[str]]) -> dict[tuple, Measured]:
    """(setting, method label, metric) -> values over seeds of the finished runs of `runs` in `spec_dir`."""
    labels = setting_labels(runs)
    out: dict[tuple, Measured] = {}
    for r in sorted(runs, key=lambda r: r.seed):
        rid = run_id(r)
        setting, method, config = labels[rid]
        res = read_json(spec_dir / rid / RESULT) or {}
        for metric in gated_metrics(r.method.name, metrics):
            key = (setting, method, metric)
            m = out.setdefault(key, Measured(setting, method, metric, [], config, []))
            if res.get("status") != "done":
                reason = res.get("reason") or ("not run" if not res else res.get("status"))
                m.failed.append(f"{rid} (seed {r.seed}): {reason}")
                continue
            v = (res.get("metrics") or {}).get(metric)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(float(v)):
                m.failed.append(f"{rid} (seed {r.seed}): metric {metric} not recorded")
                continue
            m.values.append(float(v))
            m.seeds.append(r.seed)
    return out


# ------------------------------------------------------------------------------------------ comparing
@dataclass
class Row:
    setting: str
    method: str
    metric: str
    target: Optional[float]
    measured: Optional[float]
    tolerance: Optional[float]
    status: str            # PASS | FAIL | NEW
    message: str = ""
    note: str = ""

    @property
    def delta(self) -> Optional[float]:
        if self.target is None or self.measured is None:
            return None
        return self.measured - self.target


def compare(measured: dict[tuple, Measured], targets: Targets) -> list[Row]:
    rows = []
    default_sha = str(targets.generated.get("git_sha", "unknown"))
    for e in targets.entries:
        key = (e["setting"], e["method"], e["metric"])
        floor, k = targets.tolerance(e)
        tol = max(floor, k * e["std"])
        sha = e.get("git_sha", default_sha)
        m = measured.get(key)
        where = f"{e['method']} {e['metric']} on {e['setting']}"
        if m is None or not m.values:
            why = "; ".join(m.failed) if m and m.failed else "no such (setting, method, metric) in the sweep"
            rows.append(Row(*key, e["mean"], None, tol, "FAIL",
                            f"{where}: missing (target {e['mean']:.4f} ± {tol:.4f} from git {sha}): {why}"))
            continue
        note = ""
        if e.get("config") and e["config"] != m.config:
            note = f"config changed since the target ({e['config']} -> {m.config})"
        delta = m.mean - e["mean"]
        ok = abs(delta) <= tol + 1e-12
        msg = ""
        if m.failed:
            ok = False
            msg = (f"{where}: only {m.n} of {m.n + len(m.failed)} seeds finished "
                   f"({'; '.join(m.failed)}); measured {m.mean:.4f}, target {e['mean']:.4f} from git {sha}")
        elif not ok:
            msg = (f"{where}: measured {m.mean:.4f} vs target {e['mean']:.4f} (Δ {delta:+.4f}) is outside the "
                   f"tolerance ±{tol:.4f} (max(abs_floor {floor:g}, {k:g} × seed std {e['std']:.4f})); "
                   f"target from git {sha}")
        if msg and note:
            msg += f"; {note}"
        rows.append(Row(*key, e["mean"], m.mean, tol, "PASS" if ok else "FAIL", msg, note))
    have = {(e["setting"], e["method"], e["metric"]) for e in targets.entries}
    for key, m in measured.items():
        if key not in have:
            rows.append(Row(*key, None, m.mean if m.values else None, None, "NEW",
                            note="no target (add it with --update-targets)"))
    return rows


# ------------------------------------------------------------------------------------------ output
def _f(x: Optional[float], sign: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.4f}" if sign else f"{x:.4f}"


def table_rows(rows: list[Row]) -> list[list[str]]:
    return [[r.setting, r.method, r.metric, _f(r.target), _f(r.measured), _f(r.delta, True),
             "-" if r.tolerance is None else f"±{r.tolerance:.4f}", r.status] for r in rows]


HEADER = ["setting", "method", "metric", "target", "measured", "delta", "tolerance", "result"]


def format_table(rows: list[Row]) -> str:
    body = table_rows(rows)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(HEADER)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(HEADER), line(["-" * w for w in widths]), *(line(b) for b in body)])


def format_markdown(rows: list[Row], spec_name: str, targets: Targets, extra: str = "") -> str:
    fails = [r for r in rows if r.status == "FAIL"]
    head = (f"# forgetbench check: {spec_name}\n\n"
            f"**{'FAIL' if fails else 'PASS'}**: {sum(r.status == 'PASS' for r in rows)} pass, {len(fails)} fail, "
            f"{sum(r.status == 'NEW' for r in rows)} without target; targets from git "
            f"`{targets.generated.get('git_sha', 'unknown')}` ({targets.path}).\n\n")
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    md = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    md += ["| " + " | ".join(esc(c) for c in b) + " |" for b in table_rows(rows)]
    out = head + "\n".join(md) + "\n"
    if fails:
        out += "\n## Failures\n\n" + "\n".join(f"- {esc(r.message)}" for r in fails) + "\n"
    return out + (f"\n{extra}\n" if extra else "")


def format_junit(rows: list[Row], spec_name: str, wall_s: float) -> str:
    fails = sum(r.status == "FAIL" for r in rows)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuites><testsuite name={quoteattr("forgetbench.check." + spec_name)} tests="{len(rows)}" '
           f'failures="{fails}" errors="0" skipped="{sum(r.status == "NEW" for r in rows)}" time="{wall_s:.1f}">']
    for r in rows:
        name = quoteattr(f"{r.method}.{r.metric}")
        cls = quoteattr(f"{spec_name}.{r.setting}")
        out.append(f"  <testcase classname={cls} name={name}>")
        detail = (f"target={_f(r.target)} measured={_f(r.measured)} delta={_f(r.delta, True)} "
                  f"tolerance={'-' if r.tolerance is None else f'{r.tolerance:.4f}'}")
        if r.status == "FAIL":
            out.append(f"    <failure message={quoteattr(r.message)}>{escape(detail)}</failure>")
        elif r.status == "NEW":
            out.append(f"    <skipped message={quoteattr(r.note)}/>")
        else:
            out.append(f"    <system-out>{escape(detail + ((' ' + r.note) if r.note else ''))}</system-out>")
        out.append("  </testcase>")
    out.append("</testsuite></testsuites>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------ writing targets
def _sig(x: float) -> float:
    return float(f"{x:.10g}")


def write_targets(path: Path, measured: dict[tuple, Measured], old: Optional[Targets], *, spec_path: str,
                  executor: str, workers: int, wall_s: Optional[float] = None, verdicts: Any = None) -> int:
    """Write the targets file from `measured` (keeping the old file's tolerance, metrics and verdicts sections
    and per-entry overrides). Returns the number of entries."""
    sha = git_sha()
    old_entries = {(e["setting"], e["method"], e["metric"]): e for e in (old.entries if old else [])}
    entries = []
    for key, m in measured.items():
        if not m.values:
            continue
        e: dict[str, Any] = {"setting": m.setting, "method": m.method, "metric": m.metric, "mean": _sig(m.mean),
                             "std": _sig(m.std), "n": m.n, "config": m.config}
        for k in ("abs_floor", "k"):
            if k in old_entries.get(key, {}):
                e[k] = old_entries[key][k]
        entries.append(e)
    generated = {"git_sha": sha, "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "spec": spec_path, "executor": executor, "workers": workers,
                 **({"sweep_wall_s": round(wall_s, 1)} if wall_s is not None else {}), "versions": library_versions(),
                 "machine": machine_info()}
    tolerance = {"abs_floor": old.abs_floor if old else DEFAULT_ABS_FLOOR, "k": old.k if old else DEFAULT_K}
    dump = lambda obj: yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=120)  # noqa: E731
    flow = lambda obj: yaml.safe_dump(obj, sort_keys=False, default_flow_style=True, width=10 ** 6).strip()  # noqa
    text = [f"# Targets of `forgetbench check {spec_path}`, written by --update-targets: re-baseline with",
            f"#   forgetbench check {spec_path} --targets {path} --update-targets",
            "# and commit the diff. A row passes when |measured mean - mean| <= max(abs_floor, k * std), where std is",
            "# the sample std over seeds of the target run; abs_floor and k: `tolerance` (defaults), `metric_tolerance`",
            "# (per metric) or on the entry itself.",
            dump({"generated": generated}).rstrip(),
            *([dump({"notes": old.notes}).rstrip()] if old is not None and old.notes is not None else []),
            dump({"tolerance": tolerance}).rstrip()]
    if old and old.metric_tolerance:
        text.append(dump({"metric_tolerance": old.metric_tolerance}).rstrip())
    metrics = old.metrics if old and old.metrics else {}
    if metrics:
        text.append("metrics:")
        text += [f"  {m}: {flow(lst)}" for m, lst in metrics.items()]
    text.append("targets:")
    text += [f"  - {flow(e)}" for e in entries]
    pinned = verdicts if verdicts is not None else (old.verdicts if old is not None else None)
    if pinned is not None:
        text.append(dump({"verdicts": pinned}).rstrip())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(text) + "\n")
    os.replace(tmp, path)
    return len(entries)


# ------------------------------------------------------------------------------------------ the command
def _supported_now(spec_dir: Path) -> Any:
    """The claims engine's supported verdicts on this store (pinned by --update-targets), or None without one."""
    try:
        mod = importlib.import_module("report.verdicts")
    except ImportError:
        return None
    return mod.supported_verdicts(spec_dir) if hasattr(mod, "supported_verdicts") else None


def _verdict_hook(spec_dir: Path, targets: Optional[Targets]) -> tuple[str, list[str]]:
    """Optional claims engine: `report.verdicts.verdict_table(spec_dir)` / `check_verdicts(spec_dir, verdicts)`."""
    try:
        mod = importlib.import_module("report.verdicts")
    except ImportError:
        return "", []
    except Exception as e:  # a broken claims module must not break the numeric gate
        return f"verdicts: skipped (report.verdicts failed to import: {type(e).__name__}: {e})", []
    text, failures = "", []
    try:
        if hasattr(mod, "verdict_table"):
            table = mod.verdict_table(spec_dir)
        elif all(hasattr(mod, f) for f in ("load_runs", "verdicts", "verdict_frame")):
            table = mod.verdict_frame(mod.verdicts(mod.load_runs(spec_dir)))
        else:
            table = None
        if table is not None and len(table):
            text = table if isinstance(table, str) else table.to_markdown(index=False)
            text = "verdicts (informational):\n" + text
        if hasattr(mod, "check_verdicts") and targets is not None and targets.verdicts is not None:
            failures = list(mod.check_verdicts(spec_dir, targets.verdicts) or [])
    except Exception as e:  # the claims engine is optional: its errors are reported, not fatal to the gate
        text = f"verdicts: skipped ({type(e).__name__}: {e})"
    return text, failures


def run_sweep(spec, out: Path, executor: str, workers: int, progress: bool) -> float:
    """Run the spec's unfinished runs into `out` (like `forgetbench run`); returns the wall time."""
    if executor not in EXECUTORS:
        raise CheckInputError("--executor", f"got {executor!r}; allowed: {', '.join(EXECUTORS.names())}")
    if workers < 1:
        raise CheckInputError("--workers", f"got {workers}; allowed: an integer >= 1")
    todo = register_sweep(out, spec.name, spec.source, spec.runs)
    print(f"{spec.name}: {len(spec.runs)} runs, {len(spec.runs) - len(todo)} already done, {len(todo)} to run "
          f"({executor}{'' if executor == 'inline' else f', {workers} workers'})", flush=True)
    t0 = time.perf_counter()
    if todo:
        EXECUTORS.get(executor)(workers=workers, resources=spec.resources).run(todo, out, progress=progress)
    return time.perf_counter() - t0


def run_check(args) -> int:
    """The `check` subcommand (args: spec, targets, out, executor, workers, junit, markdown, update_targets,
    overrides, no_progress)."""

    try:
        targets = None
        if not args.update_targets or Path(args.targets).exists():
            targets = load_targets(args.targets)
        spec = load_spec(args.spec, args.overrides)
        wall = run_sweep(spec, Path(args.out), args.executor, args.workers, not args.no_progress)
    except CheckInputError as e:
        print(f"forgetbench check: bad input: {e}", file=sys.stderr)
        return 2
    print(f"sweep wall time {wall:.1f} s")
    spec_dir = Path(args.out) / spec.name
    measured = measure(spec.runs, spec_dir, targets.metrics if targets else {})
    if args.update_targets:
        bad = [f"{m.method} {m.metric} on {m.setting}: {'; '.join(m.failed)}" for m in measured.values() if m.failed]
        if bad:
            print("forgetbench check: not writing targets, some runs did not finish or lack a gated metric:\n  "
                  + "\n  ".join(bad), file=sys.stderr)
            return 1
        n = write_targets(Path(args.targets), measured, targets, spec_path=str(args.spec), executor=args.executor,
                          workers=args.workers, wall_s=wall, verdicts=_supported_now(spec_dir))
        print(f"wrote {n} targets to {args.targets}")
        targets = load_targets(args.targets)
    rows = compare(measured, targets)
    print(format_table(rows))
    verdicts, verdict_failures = _verdict_hook(spec_dir, targets)
    if verdicts:
        print("\n" + verdicts)
    fails = [r for r in rows if r.status == "FAIL"]
    n_pass = sum(r.status == "PASS" for r in rows)
    n_new = sum(r.status == "NEW" for r in rows)
    print(f"\n{n_pass} pass, {len(fails)} fail, {n_new} without target "
          f"(targets {args.targets}, from git {targets.generated.get('git_sha', 'unknown')})")
    for r in fails:
        print(f"FAIL {r.message}", file=sys.stderr)
    for msg in verdict_failures:
        print(f"FAIL verdict: {msg}", file=sys.stderr)
    if args.junit:
        Path(args.junit).parent.mkdir(parents=True, exist_ok=True)
        Path(args.junit).write_text(format_junit(rows, spec.name, wall))
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(format_markdown(rows, spec.name, targets, verdicts))
    return 1 if fails or verdict_failures else 0
