"""The report's data layer and tables: read the store, aggregate over seeds, match the published numbers.

Reads only the results store (result.json, metrics.jsonl, sweep.json) and the registered papers' metadata
(bench.paper: rows, labels, reference.csv); never imports methods/ or baselines/ by name. Accuracies are shown in % (stored as fractions), differences in accuracy points.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.paper import PAPERS, Paper, paper_of, papers
from bench.results import read_results, results_frame
from bench.store import METRICS, SWEEP, read_json, read_jsonl

NOT_RUN = "not run"
DIFFERENT = "different setting"
NOT_PUBLISHED = "not published"
QUALITATIVE = "qualitative (see claim)"


def paper_methods(key: str) -> tuple[str, ...]:
    """The rows of paper `key`, in the paper's order."""
    papers()  # the paper packages registered
    return PAPERS.get(key).methods


def method_labels() -> dict[str, str]:
    """How each paper names its rows (e.g. kf_inf -> 'KF (∞)'), from the registered papers."""
    return {m: lab for p in papers() for m, lab in p.labels.items()}


METRIC_LABELS = {"test_acc": "test accuracy (%)", "val_acc": "validation accuracy (%)",
                 "task_em": "task exact match (%)", "forgetting_bpc": "forgetting (Δ bits/char on corpus A)",
                 "train_acc": "train accuracy (%)", "forget_fraction": "forget fraction (% of validation set)"}
DIGITS = {"forgetting_bpc": 3}  # decimals shown (default 2)
PERCENT_METRICS = {"test_acc", "val_acc", "train_acc", "task_em", "forget_fraction", "forget_fraction_peak", "acc_all", "acc_a", "acc_b", "forgetting_acc"}

NOISE_SHORT = {"none": "clean", "symmetric": "sym", "asymmetric": "asym"}
# config columns that are not part of a "setting" (what differs between rows of one table)
NOT_SETTING = ("config.spec", "config.seed", "config.device")


def _aliases() -> dict[str, str]:
    return {m: row for p in papers() for m, row in p.aliases.items()}


def method_label(method: str) -> str:
    return method_labels().get(method, method)


def variant_label(variant: str) -> str:
    """'kf_inf (protocol=test_half)' -> 'KF (∞) (protocol=test_half)'."""
    base, sep, rest = str(variant).partition(" (")
    return method_label(base) + (sep + rest if sep else "")


def metric_scale(metric: str, values: pd.Series | np.ndarray) -> float:
    """100 for accuracy-like metrics stored as fractions (shown in %), else 1."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    if metric in PERCENT_METRICS and (v.empty or v.abs().max() <= 1.0 + 1e-9):
        return 100.0
    return 1.0


# ----------------------------------------------------------------------------------------------------------------
# Reading the store
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class Store:
    root: Path
    runs: pd.DataFrame                      # one row per run (done and failed), config.* + metrics + provenance
    sweeps: dict[str, dict] = field(default_factory=dict)
    _curves: pd.DataFrame | None = None
    _curve_rows: dict[str, list[dict]] = field(default_factory=dict)   # run_id -> metrics.jsonl rows ([] = none)
    _done: pd.DataFrame | None = None

    @property
    def done(self) -> pd.DataFrame:
        if self._done is None:
            self._done = self.runs[self.runs["status"] == "done"] if not self.runs.empty else self.runs
        return self._done

    def curves(self, run_ids: Any = None) -> pd.DataFrame:
        """metrics.jsonl of the done runs `run_ids` (default: every done run), long: spec, run_id, epoch, metric
        columns. Each file is read once, and only when a figure asks for it; runs without one contribute no
        rows (see `without_curves`)."""
        done = self.done
        if done.empty:
            return pd.DataFrame()
        if run_ids is None:
            if self._curves is None:
                self._curves = self._curve_frame(done)
            return self._curves
        wanted = set(map(str, run_ids))
        return self._curve_frame(done[done["run_id"].astype(str).isin(wanted)])

    def _curve_frame(self, runs: pd.DataFrame) -> pd.DataFrame:
        rows: list[dict] = []
        for rid, spec, rdir in zip(runs["run_id"].astype(str), runs["spec"], runs["run_dir"]):
            got = self._curve_rows.get(rid)
            if got is None:
                got = self._curve_rows[rid] = read_jsonl(Path(rdir) / METRICS) if isinstance(rdir, str) else []
            rows += [{**r, "run_id": rid, "spec": spec} for r in got if isinstance(r, dict)]
        return pd.DataFrame(rows)

    def without_curves(self, run_ids: Any) -> list[str]:
        """Those of `run_ids` (done runs) that have no per-epoch log (metrics.jsonl missing or empty)."""
        self.curves(run_ids)
        return [str(r) for r in run_ids if not self._curve_rows.get(str(r))]


def _key(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _keys(col: pd.Series) -> pd.Series:
    """`_key` of every value of a column, computed once per distinct value."""
    uniq = {}
    out = []
    for v in col.tolist():
        try:
            k = uniq[v]
        except KeyError:
            k = uniq[v] = _key(v)
        except TypeError:  # unhashable
            k = _key(v)
        out.append(k)
    return pd.Series(out, index=col.index, dtype=object)


def load_store(root: str | Path) -> Store:
    """The runs of a results dir (or one spec folder) with provenance, paper, setting and method-variant keys.
    Each result.json is read once."""
    root = Path(root)
    results = read_results(root)
    df = results_frame(res for _, res in results)
    sweeps = {}
    for p in sorted(root.glob("**/" + SWEEP)):
        s = read_json(p)
        if isinstance(s, dict):
            sweeps[s.get("name", p.parent.name)] = s
    if df.empty:
        return Store(root, df, sweeps)
    extra = []
    for path, res in results:
        data = res.get("data") if isinstance(res.get("data"), dict) else {}
        dev = res.get("device") if isinstance(res.get("device"), dict) else {}
        device = str(dev.get("device", "?"))
        if dev.get("gpu"):
            device += f" ({dev['gpu']})"
        if dev.get("host"):
            device += f" @ {dev['host']}"
        extra.append({"run_dir": str(path.parent), "data_note": data.get("note") or "", "n_train": data.get("n_train"),
                      "n_val": data.get("n_val"), "n_test": data.get("n_test"), "device_str": device})
    ext = pd.DataFrame(extra, index=df.index)
    df = pd.concat([df, ext[[c for c in ext.columns if c not in df.columns]]], axis=1)
    owner = {m: paper_of(m) for m in set(df["method"])}
    aliases = _aliases()
    df["paper"] = df["method"].map(owner)
    df["method_name"] = df["method"]                       # as registered; `method` is the paper's row name
    df["method"] = df["method"].map(lambda m: aliases.get(m, m))
    setting_cols = setting_columns(df)
    keys = [_keys(df[c]) for c in setting_cols]
    df["setting_key"] = ["|".join(t) for t in zip(*keys)] if keys else ""
    df["variant"] = _variants(df)
    return Store(root, df, sweeps)


def setting_columns(df: pd.DataFrame) -> list[str]:
    cols = [c for c in ("dataset", "model") if c in df]
    cols += sorted(c for c in df.columns if c.startswith("config.") and not c.startswith("config.method")
                   and c not in NOT_SETTING)
    return cols


def _variants(df: pd.DataFrame) -> list[str]:
    """`method` plus the method params that vary among that method's runs (e.g. `taskvector (scale=2)`)."""
    param_cols = [c for c in df.columns if c.startswith("config.method.params.")]
    out = pd.Series(df["method"].astype(str).tolist(), index=df.index, dtype=object)
    for m, g in df.groupby("method", sort=False):
        keys = {c: _keys(g[c]) for c in param_cols}
        vary = [c for c in param_cols if keys[c].nunique() > 1]
        if not vary:
            continue
        labels = []
        for vals in zip(*(keys[c] for c in vary)):
            parts = [f"{c.removeprefix('config.method.params.')}={v}" for c, v in zip(vary, vals) if v != ""]
            labels.append(str(m) + (f" ({', '.join(parts)})" if parts else ""))
        out[g.index] = labels
    return out.tolist()


def code_version_note(runs: pd.DataFrame) -> str:
    """One line on the code the finished `runs` come from (git sha, dirty tree with the hash of its diff); a
    WARNING line when they come from several versions (numbers of different code mixed in one table)."""
    if runs.empty:
        return ""
    col = runs["code_version"] if "code_version" in runs else runs["git_sha"]
    counts = col.fillna("unknown").astype(str).value_counts(sort=True)
    if len(counts) == 1:
        return f"Code version: {counts.index[0]} (all {len(runs)} finished runs)."
    shown = "; ".join(f"{v}: {n} runs" for v, n in list(counts.items())[:6])
    more = f"; … and {len(counts) - 6} more" if len(counts) > 6 else ""
    return (f"WARNING: these {len(runs)} finished runs come from {len(counts)} code versions ({shown}{more}): "
            "numbers of different code are mixed; rerun them under one version to compare.")


# ----------------------------------------------------------------------------------------------------------------
# Setting descriptions
# ----------------------------------------------------------------------------------------------------------------

def dataset_label(row: pd.Series) -> str:
    note = str(row.get("data_note") or "")
    return note.split(";")[0].strip() or str(row.get("dataset"))


def noise_label(row: pd.Series) -> str:
    kind = _key(row.get("config.dataset.noise.kind")) or "none"
    rate = _num(row.get("config.dataset.noise.rate"))
    if kind == "none" or not rate:
        return "clean"
    return f"{NOISE_SHORT.get(kind, kind)} {rate * 100:g}% noise"


def sizes_label(row: pd.Series) -> str:
    parts = [f"{int(row[k]):,} {k[2:]}" for k in ("n_train", "n_val", "n_test") if pd.notna(row.get(k))]
    return ", ".join(parts) if parts else "sizes not recorded"


def _subset(row: pd.Series) -> str | None:
    tpc = _num(row.get("config.dataset.train_per_class"))
    if not math.isnan(tpc) and tpc != 1.0:
        return f"subset ({sizes_label(row)})"
    return None


def setting_label(row: pd.Series, varying: list[str]) -> str:
    """'<dataset from the data note>, <model>, <noise>' plus any other config value that varies in the table."""
    parts = [dataset_label(row), str(row.get("model")), noise_label(row)]
    if _subset(row):
        parts[0] += " subset"
    for c in varying:
        if c in ("dataset", "model", "config.dataset.train_per_class") or c.startswith("config.dataset.noise") \
                or c.startswith("config.model.name"):
            continue
        parts.append(f"{c.removeprefix('config.')}={_key(row.get(c))}")
    return ", ".join(parts)


def varying_columns(df: pd.DataFrame, cols: list[str]) -> list[str]:
    """The columns of `cols` with more than one distinct value (as `_key` shows it)."""
    out = []
    for c in cols:
        if c not in df:
            continue
        try:
            if df[c].nunique(dropna=False) <= 1:  # constant: `_key` cannot split one value in two
                continue
        except TypeError:  # unhashable values
            pass
        if _keys(df[c]).nunique() > 1:
            out.append(c)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Aggregation over seeds
# ----------------------------------------------------------------------------------------------------------------

def _joined(g: pd.core.groupby.SeriesGroupBy, unique: bool = False) -> pd.Series:
    return g.agg(lambda s: ",".join(dict.fromkeys(s) if unique else s))


def aggregate(done: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (setting_key, variant): mean, std (sample, ddof=1), n of `metric` (raw units) with provenance.
    Groups in order of first appearance; inside a group, runs by seed."""
    cols = ["setting_key", "variant", "method", "mean", "std", "n", "seeds", "specs", "run_ids", "git_sha",
            "code_version", "device", "data", "protocol", "first"]
    if done.empty or metric not in done:
        return pd.DataFrame(columns=cols)
    vals = pd.to_numeric(done[metric], errors="coerce")
    d = done[vals.notna()]
    if d.empty:
        return pd.DataFrame(columns=cols)
    d = d.assign(**{metric: vals[vals.notna()]})
    gid = d.groupby(["setting_key", "variant"], sort=False).ngroup()
    d = d.assign(_gid=gid.to_numpy(), _seedkey=pd.to_numeric(d["seed"], errors="coerce"))
    d = d.sort_values(["_gid", "_seedkey"], kind="mergesort")
    notes = d["data_note"].astype(str) if "data_note" in d else pd.Series("", index=d.index)
    sizes = [sizes_label(r) for r in d[[c for c in ("n_train", "n_val", "n_test") if c in d]].to_dict("records")]
    code = d["code_version"] if "code_version" in d else d["git_sha"]
    d = d.assign(_seed=_keys(d["seed"]), _spec=d["spec"].astype(str), _rid=d["run_id"].astype(str),
                 _sha=d["git_sha"].astype(str), _code=code.astype(str), _dev=d["device_str"].astype(str),
                 _data=[f"{n} ({z})" for n, z in zip(notes, sizes)],
                 _proto=[str(v) if pd.notna(v) and str(v) else "" for v in d["protocol"]] if "protocol" in d
                 else "")
    g = d.groupby("_gid", sort=True)
    first = g.head(1)
    out = pd.DataFrame({
        "setting_key": first["setting_key"].to_numpy(), "variant": first["variant"].to_numpy(),
        "method": first["method"].to_numpy(),
        "mean": g[metric].mean().to_numpy(), "std": g[metric].std(ddof=1).to_numpy(),
        "n": g.size().to_numpy(),
        "seeds": _joined(g["_seed"]).to_numpy(), "specs": _joined(g["_spec"], True).to_numpy(),
        "run_ids": _joined(g["_rid"]).to_numpy(), "git_sha": _joined(g["_sha"], True).to_numpy(),
        "code_version": _joined(g["_code"], True).to_numpy(), "device": _joined(g["_dev"], True).to_numpy(),
        "data": g["_data"].agg(lambda s: "; ".join(dict.fromkeys(s))).to_numpy(),
        "protocol": g["_proto"].agg(lambda s: ",".join(dict.fromkeys(v for v in s if v))).to_numpy()})
    first = first.drop(columns=[c for c in first.columns if c.startswith("_")])
    out["first"] = [r for _, r in first.iterrows()]
    return out


def fmt_num(x: float, digits: int = 2, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    s = f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"
    return s.replace("-", "−")


def fmt_pm(mean: float, std: float, n: int | None = None, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return NOT_RUN
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{fmt_num(mean, digits)} (n=1)" if n == 1 else fmt_num(mean, digits)
    return f"{fmt_num(mean, digits)} ± {fmt_num(std, digits)}"


# ----------------------------------------------------------------------------------------------------------------
# Published numbers
# ----------------------------------------------------------------------------------------------------------------

def load_reference(paper: Paper | None = None) -> pd.DataFrame:
    """Published cells of `paper` (default: every registered paper), from each paper package's reference.csv."""
    paths = [p.reference for p in ([paper] if paper else papers()) if p.reference is not None]
    ref = pd.concat([pd.read_csv(path, dtype=str, keep_default_na=False) for path in paths], ignore_index=True)
    ref["value_num"] = pd.to_numeric(ref["value"], errors="coerce")
    ref["std_num"] = pd.to_numeric(ref["std"], errors="coerce")
    ref["ref_id"] = range(len(ref))
    return ref


def published_str(ref: pd.Series) -> str:
    if ref.get("claim"):
        return "qualitative: " + (ref.get("note") or ref["row"]).removeprefix("qualitative claim: ")
    if pd.isna(ref["value_num"]):
        return "n/a in paper"
    return fmt_pm(ref["value_num"], ref["std_num"]) if pd.notna(ref["std_num"]) else fmt_num(ref["value_num"])


def source_str(ref: pd.Series) -> str:
    out = f"{ref['source']}; {ref['table']}; row '{ref['row']}', column '{ref['column']}'"
    return out + (f"; setting: {ref['setting']}" if ref["setting"] != ref["row"] else "")


def _cond_ok(run: pd.Series, key: str, want: str) -> bool:
    col = "config." + key
    have = run.get(col)
    missing = have is None or (isinstance(have, float) and math.isnan(have)) or col not in run
    for alt in want.split("|"):
        if alt == "missing":
            if missing:
                return True
        elif not missing:
            a, b = _num(alt), _num(have)
            if (not math.isnan(a) and not math.isnan(b) and abs(a - b) < 1e-9) or str(have) == alt:
                return True
    return False


def _num(v: Any) -> float:
    """float(v), NaN when it is not a number (pd.to_numeric(errors='coerce') for one value, faster)."""
    if isinstance(v, bool):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def match_reference(ref: pd.Series, run: pd.Series) -> list[str]:
    """Why the run's setting differs from the reference row's (empty = same setting: a difference is computed)."""
    why = []
    if ref["dataset"] and not re.fullmatch(ref["dataset"], str(run.get("dataset"))):
        why.append(f"dataset {dataset_label(run)} vs {ref['dataset']}")
    if ref["model"] and not re.fullmatch(ref["model"], str(run.get("model"))):
        why.append(f"model {run.get('model')} vs {ref['model'].split('|')[0]}")
    if ref["noise_kind"]:
        kind = _key(run.get("config.dataset.noise.kind")) or "none"
        rate = _num(run.get("config.dataset.noise.rate"))
        want_rate = float(ref["noise_rate"] or 0.0)
        same = kind == ref["noise_kind"] == "none" or (kind == ref["noise_kind"] and abs(rate - want_rate) < 1e-9)
        if not same:
            want = "clean" if ref["noise_kind"] == "none" else \
                f"{NOISE_SHORT.get(ref['noise_kind'], ref['noise_kind'])} {want_rate * 100:g}% noise"
            why.append(f"noise {noise_label(run)} vs {want}")
    if ref["dataset"] and _subset(run):
        why.append(_subset(run))
    for cond in filter(None, (c.strip() for c in ref["extra"].split(";"))):
        key, _, want = cond.partition("=")
        if not _cond_ok(run, key, want):
            why.append(f"{key}={_key(run.get('config.' + key)) or 'unset'} vs {want.replace('|missing', '')}")
    return why


def _nearest(refs: pd.DataFrame | list[dict], run: Any) -> Any:
    recs = refs.to_dict("records") if isinstance(refs, pd.DataFrame) else list(refs)
    if not recs:
        return None
    scores = [len(match_reference(r, run)) for r in recs]
    return recs[int(np.argmin(scores))]


# ----------------------------------------------------------------------------------------------------------------
# The per-paper tables
# ----------------------------------------------------------------------------------------------------------------

PROV_KEYS = ("seeds", "specs", "run_ids", "git_sha", "code_version", "device")


@dataclass
class PaperTables:
    paper: Paper
    long: pd.DataFrame                          # every row: measured, published, diff, source, provenance
    layouts: dict[str, pd.DataFrame]            # the paper's own layouts (reference table name -> pivot)
    claims: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _ordered_variants(paper: Paper, present: list[str], methods_of: dict[str, str]) -> list[tuple[str, str]]:
    """(method, variant) rows: every paper method in its order (variants present, or the bare name if none)."""
    out = []
    for m in paper.methods:
        vs = [v for v in present if methods_of[v] == m]
        out += [(m, v) for v in vs] or [(m, m)]
    out += [(methods_of[v], v) for v in present if methods_of[v] not in paper.methods]
    return out


def paper_tables(store: Store, paper: Paper, ref: pd.DataFrame) -> PaperTables:
    """One paper's long table (every measured cell beside its published value, then the published cells not run),
    its layouts, claims and setting notes."""
    done = store.done
    done = done[done["paper"] == paper.key] if not done.empty else done
    refs = ref[ref["paper"] == paper.key]
    varying = varying_columns(done, setting_columns(done)) if not done.empty else []
    rows, used = _measured_rows(paper, done, refs, varying)
    rows += _unmatched_published_rows(paper, refs, used)
    long = _finish_long(paper, pd.DataFrame(rows))
    settings = list(dict.fromkeys(done["setting_key"])) if not done.empty else []
    claims = _claims(paper, long, refs, settings, done, varying)
    out = PaperTables(paper, long, _layouts(long, refs), claims)
    out.notes = _setting_notes(done, refs, varying)
    return out


def _measured_rows(paper: Paper, done: pd.DataFrame, refs: pd.DataFrame,
                   varying: list[str]) -> tuple[list[dict], set]:
    """A row per (setting, method variant) with mean ± std over seeds, matched to the paper's published cells;
    also the ids of the published cells it used."""
    metric = paper.metrics[0]
    aggs = {m: aggregate(done, m) for m in paper.metrics}
    scale = {m: metric_scale(m, done[m]) if m in done else 1.0 for m in paper.metrics}
    rows, used = [], set()
    settings = list(dict.fromkeys(done["setting_key"])) if not done.empty else []
    methods_of = dict(zip(done["variant"], done["method"])) if not done.empty else {}
    present = list(dict.fromkeys(done["variant"])) if not done.empty else []
    rep_of: dict[str, dict] = {}
    probe_of: dict[tuple[str, str], dict] = {}
    for r in (done.to_dict("records") if not done.empty else []):
        rep_of.setdefault(r["setting_key"], r)
        probe_of.setdefault((r["setting_key"], r["variant"]), r)
    hits = {m: {(h["setting_key"], h["variant"]): h for h in aggs[m].to_dict("records")} for m in paper.metrics}
    refs_of = {m: g.to_dict("records") for m, g in refs.groupby("method", sort=False)}
    for skey in settings:
        slabel = setting_label(rep_of[skey], varying)
        for method, variant in _ordered_variants(paper, present, methods_of):
            probe = probe_of.get((skey, variant), rep_of[skey])
            base = {"setting": slabel, "method": method, "variant": variant,
                    "method_label": variant_label(variant), "data": sizes_label(probe)}
            cells = {}
            for m in paper.metrics:
                h = hits[m].get((skey, variant))
                cells[m] = (h["mean"] * scale[m], h["std"] * scale[m], int(h["n"]), h) if h is not None else \
                    (float("nan"), float("nan"), 0, None)
            mean, std, n, h = cells[metric]
            meas = {"mean": mean, "std": std, "n": n, "measured": fmt_pm(mean, std, n, DIGITS.get(metric, 2))}
            for m in paper.metrics[1:]:
                meas.update({f"{m}_mean": cells[m][0], f"{m}_std": cells[m][1], f"{m}_n": cells[m][2],
                             f"{m}_measured": fmt_pm(cells[m][0], cells[m][1], cells[m][2], DIGITS.get(m, 2))})
            prov = ({k: h[k] for k in PROV_KEYS} if h is not None else dict.fromkeys(PROV_KEYS, ""))
            if h is not None and h.get("protocol"):
                prov["protocol"] = h["protocol"]
            mrefs = refs_of.get(method, [])
            why = [match_reference(r, probe) for r in mrefs]
            matched = [r for r, w in zip(mrefs, why) if not w]
            if matched:
                for r in matched:
                    used.add(r["ref_id"])
                    rows.append({**base, **meas, **_published(r, mean, []), **prov})
            elif mrefs:
                i = int(np.argmin([len(w) for w in why]))
                rows.append({**base, **meas, **_published(mrefs[i], mean, why[i]), **prov})
            else:
                rows.append({**base, **meas, **_published(None, mean, None), **prov})
    return rows, used


def _unmatched_published_rows(paper: Paper, refs: pd.DataFrame, used: set) -> list[dict]:
    """The published cells no measured run matched: 'not run' beside the paper's number."""
    rows = []
    for _, r in refs.iterrows():
        if r["ref_id"] in used or r["claim"]:
            continue
        rows.append({"setting": r["setting"], "method": r["method"], "variant": r["method"],
                     "method_label": method_label(r["method"]), "data": "", "mean": float("nan"),
                     "std": float("nan"), "n": 0, "measured": NOT_RUN,
                     **{k: v for m in paper.metrics[1:] for k, v in
                        ((f"{m}_mean", float("nan")), (f"{m}_std", float("nan")), (f"{m}_n", 0),
                         (f"{m}_measured", NOT_RUN))},
                     **_published(r, float("nan"), []),
                     **dict.fromkeys(PROV_KEYS, "")})
    return rows


def _finish_long(paper: Paper, long: pd.DataFrame) -> pd.DataFrame:
    """The validation protocol in the setting note; a placeholder row per method when nothing is there."""
    if "protocol" in long:  # Forget Me Not: which split chose KF's checkpoints (test_half | train_holdout)
        long["protocol"] = long["protocol"].fillna("")
        long["setting_note"] = ["; ".join(filter(None, [n, f"validation protocol: {p}" if p else ""]))
                                for n, p in zip(long["setting_note"], long["protocol"])]
    if long.empty:  # no runs and no published rows (cannot happen with the shipped reference.csv)
        long = pd.DataFrame([{"setting": "", "method": m, "method_label": method_label(m), "measured": NOT_RUN,
                              "published": NOT_PUBLISHED, "diff_str": NOT_RUN} for m in paper.methods])
    return long


def _published(r: pd.Series | None, mean: float, why: list[str] | None) -> dict:
    """The published columns of a row; `why` = [] when the setting matches, else the mismatches."""
    if r is None:
        return {"published": NOT_PUBLISHED, "published_value": float("nan"), "published_std": float("nan"),
                "diff": float("nan"), "diff_str": NOT_PUBLISHED if not math.isnan(mean) else NOT_RUN,
                "source": "", "ref_setting": "", "ref_id": -1, "setting_note": ""}
    value = r["value_num"]
    if r["claim"]:
        diff, dstr = float("nan"), QUALITATIVE if not math.isnan(mean) else NOT_RUN
    elif why:
        diff, dstr = float("nan"), DIFFERENT
    elif math.isnan(mean):
        diff, dstr = float("nan"), NOT_RUN
    elif pd.isna(value):
        diff, dstr = float("nan"), NOT_PUBLISHED
    else:
        diff = mean - value
        dstr = fmt_num(diff, sign=True)
    note = "; ".join(filter(None, ["; ".join(why or []), r["note"]]))
    return {"published": published_str(r), "published_value": value, "published_std": r["std_num"],
            "diff": diff, "diff_str": dstr, "source": source_str(r), "ref_setting": r["setting"],
            "ref_id": int(r["ref_id"]), "setting_note": note}


MAX_CELL_HITS = 3


def _layouts(long: pd.DataFrame, refs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each published table in the paper's layout: cells 'published (measured: …, Δ …)' for the same setting."""
    out = {}
    for table, t in refs[refs["claim"] == ""].groupby("table", sort=False):
        rows_, cols = list(dict.fromkeys(t["row"])), list(dict.fromkeys(t["column"]))
        grid = pd.DataFrame(NOT_PUBLISHED, index=rows_, columns=cols)
        for _, r in t.iterrows():
            hits = long[(long.get("ref_id", pd.Series(dtype=int)) == r["ref_id"]) & long["mean"].notna()
                        & (long["diff_str"] != DIFFERENT)] if "ref_id" in long else long.iloc[0:0]
            cells = [f"{m}, Δ {d}" for m, d in zip(hits["measured"], hits["diff_str"])]
            if len(cells) > MAX_CELL_HITS:  # many settings match one published cell (e.g. an lr sweep)
                cells = cells[:MAX_CELL_HITS] + [f"+{len(cells) - MAX_CELL_HITS} more settings, see the full table"]
            meas = "; ".join(cells) or NOT_RUN
            grid.loc[r["row"], r["column"]] = f"{published_str(r)} (measured: {meas})"
        grid.index.name = "row"
        grid.columns = [re.sub(r"^x(\d+)$", r"×\1", c).replace("(inf)", "(∞)") for c in grid.columns]
        out[table.replace("(inf)", "(∞)")] = grid.reset_index()
    return out


def _claims(paper: Paper, long: pd.DataFrame, refs: pd.DataFrame, settings: list[str], done: pd.DataFrame,
            varying: list[str]) -> list[str]:
    """Checks of qualitative claims ('a<b;a<c' on the paper's first metric) per measured setting."""
    out = []
    crefs = refs[refs["claim"] != ""]
    if crefs.empty:
        return out
    reps = done.drop_duplicates("setting_key").set_index("setting_key") if settings else done
    label_of = {skey: setting_label(r, varying) for skey, r in zip(reps.index, reps.to_dict("records"))} \
        if settings else {}
    best_of = {}  # the best variant of each arm, per setting label
    if settings and not long.empty:
        sub = long.drop_duplicates(["setting", "variant"])
        best_of = {lab: g.groupby("method")["mean"].min() for lab, g in sub.groupby("setting", sort=False)}
    for claim, cr in crefs.groupby("claim", sort=False):
        text = cr["note"].iloc[0] or claim
        if not settings:
            out.append(f"{text}: not run")
        for skey in settings:
            slabel = label_of[skey]
            best = best_of.get(slabel, pd.Series(dtype=float))
            verdicts = []
            for part in claim.split(";"):
                a, b = part.split("<")
                ma, mb = best.get(a, float("nan")), best.get(b, float("nan"))
                if pd.isna(ma) or pd.isna(mb):
                    verdicts.append(f"{a} < {b}: not run")
                else:
                    verdicts.append(f"{a} < {b}: {'holds' if ma < mb else 'does NOT hold'} "
                                    f"({fmt_num(ma, 3)} vs {fmt_num(mb, 3)} {paper.metrics[0]})")
            out.append(f"{text} [{slabel}]: " + "; ".join(verdicts))
    return _collapse(out, "claim checks")


MAX_NOTES = 25  # note lines per section before similar ones are collapsed


def _collapse(lines: list[str], what: str, limit: int = MAX_NOTES) -> list[str]:
    """At most `limit` lines: beyond it, lines that only differ inside their [setting] / first field are
    counted, not repeated (the full list is in the section's CSV tables)."""
    if len(lines) <= limit:
        return lines
    groups: dict[str, list[str]] = {}
    for ln in lines:
        m = re.match(r"^(.*?) \[(.*)\]: (.*)$", ln)
        key = f"{m.group(1)}: {re.sub(r' [(][^()]*[)]', '', m.group(3))}" if m else ln.split(": ", 1)[-1]
        groups.setdefault(key, []).append(ln)
    out = []
    for key, lns in groups.items():
        out.append(lns[0] if len(lns) == 1 else f"{key} (in {len(lns)} settings; e.g. "
                   f"{_setting_of(lns[0])})")
    if len(out) > limit:
        out = out[:limit] + [f"… and {len(out) - limit} more {what} (see the CSV tables)"]
    return out


def _setting_of(line: str) -> str:
    m = re.match(r"^.*? \[(.*)\]: ", line)
    return m.group(1) if m else line.split(": ", 1)[0]


def _setting_notes(done: pd.DataFrame, refs: pd.DataFrame, varying: list[str]) -> list[str]:
    """One line per measured setting: its data (note, sizes) and how it differs from the paper's settings
    (many settings: lines with the same data and verdict are counted, see `_collapse`)."""
    notes = []
    if done.empty:
        return notes
    num = refs[(refs["claim"] == "") & refs["dataset"].ne("")].to_dict("records")
    for rep in done.drop_duplicates("setting_key").to_dict("records"):
        why = [match_reference(r, rep) for r in num]
        same = [r for r, w in zip(num, why) if not w]
        if same:
            verdict = "same setting as the paper's " + ", ".join(dict.fromkeys(r["setting"] for r in same))
        elif not num:
            verdict = "the paper's settings differ (no published numbers to compare)"
        else:
            i = int(np.argmin([len(w) for w in why]))
            verdict = (f"differs from the paper (nearest published setting: {num[i]['setting']}: "
                       + "; ".join(why[i]) + ")")
        notes.append(f"{setting_label(rep, varying)}: data {rep['data_note'] or rep['dataset']} "
                     f"({sizes_label(rep)}); {verdict}")
    if len(notes) > MAX_NOTES:
        groups: dict[str, list[str]] = {}
        for n in notes:
            label, _, rest = n.partition(": data ")
            # the per-setting values (lr=…, epochs=…) vary; what the data and the verdict say is what matters
            rest = re.sub(r"\b[\w.]+=[^;,)]*", "…", rest)
            groups.setdefault(rest, []).append(label)
        notes = [f"{len(labels)} settings (e.g. {labels[0]}): data {rest}" if len(labels) > 1
                 else f"{labels[0]}: data {rest}" for rest, labels in groups.items()]
        if len(notes) > MAX_NOTES:
            notes = notes[:MAX_NOTES] + [f"… and {len(notes) - MAX_NOTES} more kinds of settings"]
    return notes


def generic_table(done: pd.DataFrame, metrics: tuple[str, ...] = ("test_acc", "val_acc", "forgetting_bpc",
                                                                   "task_em")) -> pd.DataFrame:
    """Any sweep: mean ± std (n) per setting and method for each metric present."""
    if done.empty:
        return pd.DataFrame()
    varying = varying_columns(done, setting_columns(done))
    present = [m for m in metrics if m in done and pd.to_numeric(done[m], errors="coerce").notna().any()]
    rows = {}
    for m in present:
        a, sc = aggregate(done, m), metric_scale(m, done[m])
        for h in a.to_dict("records"):
            key = (h["setting_key"], h["variant"])
            row = rows.setdefault(key, {"setting": setting_label(h["first"], varying), "method": h["variant"],
                                        "n": int(h["n"]), "runs": h["run_ids"]})
            row[METRIC_LABELS.get(m, m)] = fmt_pm(h["mean"] * sc, h["std"] * sc, int(h["n"]), DIGITS.get(m, 2))
            row[f"{m}_mean"], row[f"{m}_std"] = h["mean"] * sc, h["std"] * sc
    return pd.DataFrame(list(rows.values()))


# ----------------------------------------------------------------------------------------------------------------
# Writers: Markdown, LaTeX (booktabs, by hand), CSV
# ----------------------------------------------------------------------------------------------------------------

DISPLAY_COLUMNS = {"method_label": "method", "setting": "setting", "data": "data size",
                   "measured": "measured", "n": "n", "published": "published", "diff_str": "Δ (pts)",
                   "source": "source", "setting_note": "note"}


def display_frame(long: pd.DataFrame, paper: Paper) -> pd.DataFrame:
    cols = dict(DISPLAY_COLUMNS)
    unit = "bits/char" if paper.metrics[0] == "forgetting_bpc" else "%"
    cols["measured"] = f"{paper.metrics[0]} ({unit})"
    for m in paper.metrics[1:]:
        cols[f"{m}_measured"] = f"{m} (%)" if m in PERCENT_METRICS else m
    if paper.metrics[0] != "test_acc":
        cols["diff_str"] = "Δ"
    keep = [c for c in cols if c in long]
    out = long[keep].rename(columns=cols).copy()
    if "n" in out:
        out["n"] = out["n"].astype(int)
    return out.fillna("").replace("", "—")


_NUMBER = re.compile(r"^\s*[-+−]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub (pipe) table like tabulate's, numbers right-aligned, '|' in cells shown as '/'; built directly
    (tabulate's per-cell type detection dominated the report's time on stores of thousands of runs)."""
    head = [str(c).replace("|", "/") for c in df.columns]
    body = [[str(v).replace("|", "/") for v in row] for row in df.itertuples(index=False, name=None)]
    if not head:
        return ""
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(head)]
    right = [bool(body) and all(_NUMBER.match(r[i]) for r in body) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if rt else c.ljust(w) for c, w, rt in zip(cells, widths, right)) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ":") if rt else (":" + "-" * (w + 1)) for w, rt in zip(widths, right)) + "|"
    return "\n".join([line(head), sep] + [line(r) for r in body])


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "×": r"$\times$",
        "∞": r"$\infty$", "−": r"$-$", "Δ": r"$\Delta$", "θ": r"$\theta$", "→": r"$\to$", "≈": r"$\approx$",
        "<": r"$<$", ">": r"$>$"}


def tex_escape(s: Any) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


def to_latex(df: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A booktabs table (needs \\usepackage{booktabs}); every cell escaped."""
    cols = "l" * len(df.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if caption:
        lines.append(r"\caption{" + tex_escape(caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines += [r"\begin{tabular}{" + cols + "}", r"\toprule",
              " & ".join(tex_escape(c) for c in df.columns) + r" \\", r"\midrule"]
    for row in df.astype(str).itertuples(index=False):
        lines.append(" & ".join(tex_escape(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def write_table(df: pd.DataFrame, out_dir: Path, stem: str, *, csv_frame: pd.DataFrame | None = None,
                caption: str = "") -> dict[str, Path]:
    """stem.md, stem.tex, stem.csv (csv_frame: the raw numeric columns, when given)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / f"{stem}.md", "tex": out_dir / f"{stem}.tex", "csv": out_dir / f"{stem}.csv"}
    paths["md"].write_text(to_markdown(df) + "\n")
    paths["tex"].write_text(to_latex(df, caption, f"tab:{stem}"))
    (csv_frame if csv_frame is not None else df).to_csv(paths["csv"], index=False)
    return paths


CSV_COLUMNS = ["setting", "method", "variant", "data", "mean", "std", "n", "measured", "published_value",
               "published_std", "published", "diff", "diff_str", "source", "ref_setting", "setting_note", "seeds",
               "specs", "run_ids", "git_sha", "code_version", "device", "protocol"]


def csv_frame(long: pd.DataFrame, paper: Paper) -> pd.DataFrame:
    extra = [c for m in paper.metrics[1:] for c in (f"{m}_mean", f"{m}_std", f"{m}_n", f"{m}_measured")]
    cols = [c for c in CSV_COLUMNS[:8] + extra + CSV_COLUMNS[8:] if c in long]
    return long[cols]
