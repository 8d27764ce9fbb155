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
from bench.results import load_results
from bench.store import METRICS, RESULT, read_json, read_jsonl

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
PERCENT_METRICS = {"test_acc", "val_acc", "train_acc", "task_em", "forget_fraction"}

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

    @property
    def done(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "done"] if not self.runs.empty else self.runs

    def curves(self) -> pd.DataFrame:
        """metrics.jsonl of every done run, long: spec, run_id, epoch, metric columns."""
        if self._curves is None:
            frames = []
            for _, r in self.done.iterrows():
                rows = read_jsonl(Path(r["run_dir"]) / METRICS)
                if rows:
                    f = pd.DataFrame(rows)
                    f["run_id"], f["spec"] = r["run_id"], r["spec"]
                    frames.append(f)
            self._curves = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return self._curves


def _key(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def load_store(root: str | Path) -> Store:
    """The runs of a results dir (or one spec folder) with provenance, paper, setting and method-variant keys."""
    root = Path(root)
    df = load_results(root)
    sweeps = {}
    for p in sorted(root.glob("**/sweep.json")):
        s = read_json(p)
        if s:
            sweeps[s.get("name", p.parent.name)] = s
    if df.empty:
        return Store(root, df, sweeps)
    extra = {}
    for path in sorted(root.glob("**/" + RESULT)):
        res = read_json(path) or {}
        data, dev = res.get("data") or {}, res.get("device") or {}
        device = str(dev.get("device", "?"))
        if dev.get("gpu"):
            device += f" ({dev['gpu']})"
        if dev.get("host"):
            device += f" @ {dev['host']}"
        extra[(res.get("spec"), res.get("run_id"))] = {
            "run_dir": str(path.parent), "data_note": data.get("note") or "", "n_train": data.get("n_train"),
            "n_val": data.get("n_val"), "n_test": data.get("n_test"), "device_str": device}
    ext = pd.DataFrame([{"spec": k[0], "run_id": k[1], **v} for k, v in extra.items()])
    df = df.merge(ext, on=["spec", "run_id"], how="left")
    owner = {m: paper_of(m) for m in set(df["method"])}
    aliases = _aliases()
    df["paper"] = df["method"].map(owner)
    df["method_name"] = df["method"]                       # as registered; `method` is the paper's row name
    df["method"] = df["method"].map(lambda m: aliases.get(m, m))
    setting_cols = setting_columns(df)
    df["setting_key"] = ["|".join(_key(v) for v in row) for row in df[setting_cols].itertuples(index=False)]
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
    varying = {m: [c for c in param_cols if g[c].map(_key).nunique() > 1] for m, g in df.groupby("method")}
    out = []
    for _, r in df.iterrows():
        parts = [f"{c.removeprefix('config.method.params.')}={_key(r[c])}" for c in varying.get(r["method"], [])
                 if _key(r[c]) != ""]
        out.append(r["method"] + (f" ({', '.join(parts)})" if parts else ""))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Setting descriptions
# ----------------------------------------------------------------------------------------------------------------

def dataset_label(row: pd.Series) -> str:
    note = str(row.get("data_note") or "")
    return note.split(";")[0].strip() or str(row.get("dataset"))


def noise_label(row: pd.Series) -> str:
    kind = _key(row.get("config.dataset.noise.kind")) or "none"
    rate = pd.to_numeric(row.get("config.dataset.noise.rate"), errors="coerce")
    if kind == "none" or not rate:
        return "clean"
    return f"{NOISE_SHORT.get(kind, kind)} {rate * 100:g}% noise"


def sizes_label(row: pd.Series) -> str:
    parts = [f"{int(row[k]):,} {k[2:]}" for k in ("n_train", "n_val", "n_test") if pd.notna(row.get(k))]
    return ", ".join(parts) if parts else "sizes not recorded"


def _subset(row: pd.Series) -> str | None:
    tpc = pd.to_numeric(row.get("config.dataset.train_per_class"), errors="coerce")
    if pd.notna(tpc) and tpc != 1.0:
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
    return [c for c in cols if c in df and df[c].map(_key).nunique() > 1]


# ----------------------------------------------------------------------------------------------------------------
# Aggregation over seeds
# ----------------------------------------------------------------------------------------------------------------

def aggregate(done: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (setting_key, variant): mean, std (sample, ddof=1), n of `metric` (raw units) with provenance."""
    if done.empty or metric not in done:
        return pd.DataFrame(columns=["setting_key", "variant", "mean", "std", "n"])
    d = done[pd.to_numeric(done[metric], errors="coerce").notna()].copy()
    d[metric] = pd.to_numeric(d[metric])
    rows = []
    for (skey, variant), g in d.groupby(["setting_key", "variant"], sort=False):
        g = g.sort_values("seed")
        rows.append({"setting_key": skey, "variant": variant, "method": g["method"].iloc[0],
                     "mean": g[metric].mean(), "std": g[metric].std(ddof=1) if len(g) > 1 else float("nan"),
                     "n": len(g), "seeds": ",".join(_key(s) for s in g["seed"]),
                     "specs": ",".join(dict.fromkeys(g["spec"].astype(str))),
                     "run_ids": ",".join(g["run_id"].astype(str)),
                     "git_sha": ",".join(dict.fromkeys(g["git_sha"].astype(str))),
                     "device": ",".join(dict.fromkeys(g["device_str"].astype(str))),
                     "data": "; ".join(dict.fromkeys(f"{n} ({sizes_label(r)})" for n, (_, r) in
                                                     zip(g["data_note"], g.iterrows()))),
                     "protocol": ",".join(dict.fromkeys(str(v) for v in g.get("protocol", pd.Series(dtype=str))
                                                        if pd.notna(v) and str(v))),
                     "first": g.iloc[0]})
    return pd.DataFrame(rows)


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
    missing = have is None or (isinstance(have, float) and math.isnan(have)) or col not in run.index
    for alt in want.split("|"):
        if alt == "missing":
            if missing:
                return True
        elif not missing:
            a, b = pd.to_numeric(pd.Series([alt, have]), errors="coerce")
            if (pd.notna(a) and pd.notna(b) and abs(a - b) < 1e-9) or str(have) == alt:
                return True
    return False


def match_reference(ref: pd.Series, run: pd.Series) -> list[str]:
    """Why the run's setting differs from the reference row's (empty = same setting: a difference is computed)."""
    why = []
    if ref["dataset"] and not re.fullmatch(ref["dataset"], str(run.get("dataset"))):
        why.append(f"dataset {dataset_label(run)} vs {ref['dataset']}")
    if ref["model"] and not re.fullmatch(ref["model"], str(run.get("model"))):
        why.append(f"model {run.get('model')} vs {ref['model'].split('|')[0]}")
    if ref["noise_kind"]:
        kind = _key(run.get("config.dataset.noise.kind")) or "none"
        rate = float(pd.to_numeric(run.get("config.dataset.noise.rate"), errors="coerce") or 0.0)
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


def _nearest(refs: pd.DataFrame, run: pd.Series) -> pd.Series | None:
    if refs.empty:
        return None
    scores = [len(match_reference(r, run)) for _, r in refs.iterrows()]
    return refs.iloc[int(np.argmin(scores))]


# ----------------------------------------------------------------------------------------------------------------
# The per-paper tables
# ----------------------------------------------------------------------------------------------------------------

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
    done = store.done
    done = done[done["paper"] == paper.key] if not done.empty else done
    refs = ref[ref["paper"] == paper.key]
    metric = paper.metrics[0]
    aggs = {m: aggregate(done, m) for m in paper.metrics}
    main = aggs[metric]
    scale = {m: metric_scale(m, done[m]) if m in done else 1.0 for m in paper.metrics}
    varying = varying_columns(done, setting_columns(done)) if not done.empty else []
    rows, used = [], set()
    settings = list(dict.fromkeys(done["setting_key"])) if not done.empty else []
    methods_of = dict(zip(done["variant"], done["method"])) if not done.empty else {}
    present = list(dict.fromkeys(done["variant"])) if not done.empty else []
    for skey in settings:
        in_setting = done[done["setting_key"] == skey]
        rep = in_setting.iloc[0]
        slabel = setting_label(rep, varying)
        for method, variant in _ordered_variants(paper, present, methods_of):
            runs = in_setting[in_setting["variant"] == variant]
            probe = runs.iloc[0] if len(runs) else rep
            base = {"setting": slabel, "method": method, "variant": variant,
                    "method_label": variant_label(variant),
                    "data": sizes_label(probe)}
            cells = {}
            for m in paper.metrics:
                a = aggs[m]
                hit = a[(a["setting_key"] == skey) & (a["variant"] == variant)] if not a.empty else a
                if len(hit):
                    h = hit.iloc[0]
                    cells[m] = (h["mean"] * scale[m], h["std"] * scale[m], int(h["n"]), h)
                else:
                    cells[m] = (float("nan"), float("nan"), 0, None)
            mean, std, n, h = cells[metric]
            meas = {"mean": mean, "std": std, "n": n, "measured": fmt_pm(mean, std, n, DIGITS.get(metric, 2))}
            for m in paper.metrics[1:]:
                meas.update({f"{m}_mean": cells[m][0], f"{m}_std": cells[m][1], f"{m}_n": cells[m][2],
                             f"{m}_measured": fmt_pm(cells[m][0], cells[m][1], cells[m][2], DIGITS.get(m, 2))})
            prov = ({k: h[k] for k in ("seeds", "specs", "run_ids", "git_sha", "device")} if h is not None
                    else {k: "" for k in ("seeds", "specs", "run_ids", "git_sha", "device")})
            if h is not None and h.get("protocol"):
                prov["protocol"] = h["protocol"]
            mrefs = refs[refs["method"] == method]
            matched = [r for _, r in mrefs.iterrows() if not match_reference(r, probe)]
            if matched:
                for r in matched:
                    used.add(r["ref_id"])
                    rows.append({**base, **meas, **_published(r, mean, []), **prov})
            else:
                r = _nearest(mrefs, probe)
                rows.append({**base, **meas, **_published(r, mean, match_reference(r, probe) if r is not None
                                                          else None), **prov})
    # published rows without a measured run of the same setting
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
                     **{k: "" for k in ("seeds", "specs", "run_ids", "git_sha", "device")}})
    long = pd.DataFrame(rows)
    if "protocol" in long:  # Forget Me Not: which split chose KF's checkpoints (test_half | train_holdout)
        long["protocol"] = long["protocol"].fillna("")
        long["setting_note"] = ["; ".join(filter(None, [n, f"validation protocol: {p}" if p else ""]))
                                for n, p in zip(long["setting_note"], long["protocol"])]
    if long.empty:  # no runs and no published rows (cannot happen with the shipped reference.csv)
        long = pd.DataFrame([{"setting": "", "method": m, "method_label": method_label(m), "measured": NOT_RUN,
                              "published": NOT_PUBLISHED, "diff_str": NOT_RUN} for m in paper.methods])
    claims = _claims(paper, long, refs, settings, done, varying)
    out = PaperTables(paper, long, _layouts(long, refs), claims)
    out.notes = _setting_notes(done, refs, varying)
    return out


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


def _layouts(long: pd.DataFrame, refs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each published table in the paper's layout: cells 'published (measured: …, Δ …)' for the same setting."""
    out = {}
    for table, t in refs[refs["claim"] == ""].groupby("table", sort=False):
        rows_, cols = list(dict.fromkeys(t["row"])), list(dict.fromkeys(t["column"]))
        grid = pd.DataFrame(NOT_PUBLISHED, index=rows_, columns=cols)
        for _, r in t.iterrows():
            hits = long[(long.get("ref_id", pd.Series(dtype=int)) == r["ref_id"]) & long["mean"].notna()
                        & (long["diff_str"] != DIFFERENT)] if "ref_id" in long else long.iloc[0:0]
            meas = "; ".join(f"{h['measured']}, Δ {h['diff_str']}" for _, h in hits.iterrows()) or NOT_RUN
            grid.loc[r["row"], r["column"]] = f"{published_str(r)} (measured: {meas})"
        grid.index.name = "row"
        grid.columns = [re.sub(r"^x(\d+)$", r"×\1", c).replace("(inf)", "(∞)") for c in grid.columns]
        out[table.replace("(inf)", "(∞)")] = grid.reset_index()
    return out


def _claims(paper: Paper, long: pd.DataFrame, refs: pd.DataFrame, settings: list[str], done: pd.DataFrame,
            varying: list[str]) -> list[str]:
    """Checks of qualitative claims ('a<b;a<c' on the paper's first metric) per measured setting."""
    out = []
    for claim, cr in refs[refs["claim"] != ""].groupby("claim", sort=False):
        text = cr["note"].iloc[0] or claim
        if not settings:
            out.append(f"{text}: not run")
        for skey in settings:
            rep = done[done["setting_key"] == skey].iloc[0]
            slabel = setting_label(rep, varying)
            sub = long[long["setting"] == slabel].drop_duplicates("variant")
            best = sub.groupby("method")["mean"].min()  # the best variant of each arm
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
    return out


def _setting_notes(done: pd.DataFrame, refs: pd.DataFrame, varying: list[str]) -> list[str]:
    """One line per measured setting: its data (note, sizes) and how it differs from the paper's settings."""
    notes = []
    if done.empty:
        return notes
    for skey, g in done.groupby("setting_key", sort=False):
        rep = g.iloc[0]
        num = refs[(refs["claim"] == "") & refs["dataset"].ne("")]
        same = [r for _, r in num.iterrows() if not match_reference(r, rep)]
        if same:
            verdict = "same setting as the paper's " + ", ".join(dict.fromkeys(r["setting"] for r in same))
        elif num.empty:
            verdict = "the paper's settings differ (no published numbers to compare)"
        else:
            near = _nearest(num, rep)
            verdict = (f"differs from the paper (nearest published setting: {near['setting']}: "
                       + "; ".join(match_reference(near, rep)) + ")")
        notes.append(f"{setting_label(rep, varying)}: data {rep['data_note'] or rep['dataset']} "
                     f"({sizes_label(rep)}); {verdict}")
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
        for _, h in a.iterrows():
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


def to_markdown(df: pd.DataFrame) -> str:
    return df.astype(str).apply(lambda s: s.str.replace("|", "/", regex=False)).to_markdown(index=False)


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
               "specs", "run_ids", "git_sha", "device", "protocol"]


def csv_frame(long: pd.DataFrame, paper: Paper) -> pd.DataFrame:
    extra = [c for m in paper.metrics[1:] for c in (f"{m}_mean", f"{m}_std", f"{m}_n", f"{m}_measured")]
    cols = [c for c in CSV_COLUMNS[:8] + extra + CSV_COLUMNS[8:] if c in long]
    return long[cols]
