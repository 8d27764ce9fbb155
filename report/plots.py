"""Figures of the report (matplotlib/seaborn, PNG + PDF): per paper, and a generic pair for any sweep."""
from __future__ import annotations

import math
import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.paper import papers  # noqa: E402
from bench.store import METRICS  # noqa: E402

from report.tables import (Store, _key, dataset_label, metric_scale, noise_label, setting_columns, variant_label, varying_columns)
from report.tables import METRIC_LABELS

DPI = 150
MAX_LINES = 8      # lines (curves, bar colours, points) per axes: the best ones; the rest named in the caption
MAX_GROUPS = 12    # bar groups (methods) per axes
MAX_FIGURES = 3    # figures of one kind (one per setting): the best settings; the rest listed as skipped


@dataclass
class Figure:
    stem: str
    title: str
    caption: str
    png: Path
    pdf: Path
    runs: list[str] = field(default_factory=list)


@dataclass
class Skipped:
    title: str
    reason: str


def apply_style() -> None:
    sns.set_theme(style="whitegrid", context="notebook", font_scale=1.0)
    plt.rcParams.update({"figure.dpi": DPI, "savefig.dpi": DPI, "axes.titlesize": 12, "axes.labelsize": 11,
                         "legend.fontsize": 9})


def save_figure(fig: plt.Figure, out: Path, stem: str, title: str, caption: str, runs: list[str]) -> Figure:
    out.mkdir(parents=True, exist_ok=True)
    png, pdf = out / f"{stem}.png", out / f"{stem}.pdf"
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(png)
    fig.savefig(pdf)
    plt.close(fig)
    return Figure(stem, title, caption, png, pdf, runs)


def slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")[:60] or "x"


def color_map(names: list[str]) -> dict[str, tuple]:
    pal = sns.color_palette("tab10", max(len(names), 1)) if len(names) <= 10 else sns.color_palette("husl",
                                                                                                      len(names))
    return dict(zip(names, pal))


def parts_label(row: pd.Series, varying: list[str], skip: tuple[str, ...] = ()) -> str:
    """A short label from the config values that vary (noise as 'sym 20% noise', others as key=value)."""
    out, noise_done = [], False
    for c in varying:
        if c in skip:
            continue
        if c.startswith("config.dataset.noise"):
            if not noise_done:
                out.append(noise_label(row))
                noise_done = True
        elif c == "dataset":
            out.append(dataset_label(row))
        elif c == "config.dataset.train_per_class":
            v = _key(row.get(c))
            out.append(f"{v} per class" if v else "full train set")
        elif c == "model" or c == "config.model.name":
            if "model" not in skip:
                out.append(str(row.get("model")))
        else:
            out.append(f"{c.removeprefix('config.')}={_key(row.get(c))}")
    return ", ".join(dict.fromkeys(out))


def common_label(df: pd.DataFrame, varying: list[str]) -> str:
    """What all rows share: dataset (from the data note), model, noise when constant."""
    r = df.iloc[0]
    parts = []
    if "dataset" not in varying:
        parts.append(dataset_label(r))
    if "model" not in varying:
        parts.append(str(r.get("model")))
    if not any(c.startswith("config.dataset.noise") for c in varying):
        parts.append(noise_label(r))
    return ", ".join(parts)


def top_k(scores: dict, k: int, higher: bool = True, first: list | None = None) -> tuple[list, list]:
    """(kept, rest): the `k` keys of `scores` with the best score (NaN last; ties in insertion order), those
    in `first` before the others; both lists in the order of `scores`' keys."""
    keys = list(scores)
    if len(keys) <= k:
        return keys, []

    def rank(key):
        v = scores[key]
        bad = v is None or (isinstance(v, float) and math.isnan(v))
        return (bad, 0.0 if bad else (-v if higher else v))
    pinned = [key for key in (first or []) if key in scores][:k]
    chosen = set(pinned) | set(sorted((key for key in keys if key not in pinned), key=rank)[: k - len(pinned)])
    return [key for key in keys if key in chosen], sorted((key for key in keys if key not in chosen), key=rank)


def rest_note(rest: list[str], what: str, why: str, show: int = 6) -> str:
    """A caption sentence naming what a figure leaves out ('' when nothing)."""
    if not rest:
        return ""
    names = "; ".join(map(str, rest[:show])) + (f"; … and {len(rest) - show} more" if len(rest) > show else "")
    return f" Not drawn: {len(rest)} more {what} ({why}): {names}. Their numbers are in the tables."


def line_labels(d: pd.DataFrame, varying: list[str], skip: tuple[str, ...] = (), fallback=None) -> list[str]:
    """`parts_label` of every row, computed once per setting (the label depends on the setting only)."""
    if d.empty:
        return []
    key = d["setting_key"] if "setting_key" in d else pd.Series(range(len(d)), index=d.index)
    firsts = d.loc[~key.duplicated()]
    lab = {}
    for k, r in zip(key[~key.duplicated()], firsts.to_dict("records")):
        lab[k] = parts_label(r, varying, skip) or (fallback(r) if fallback else "")
    return [lab[k] for k in key]


def draw_band(ax, runs: pd.DataFrame, curves: pd.DataFrame, metric: str, label: str, color) -> bool:
    """Mean over seeds per epoch, shaded ± 1 std; False when the metric was not logged (or no run of `runs`
    has a per-epoch log)."""
    if curves.empty or "run_id" not in curves or metric not in curves:
        return False
    c = curves[curves["run_id"].isin(runs["run_id"].astype(str))]
    if c.empty or metric not in c or c[metric].notna().sum() == 0:
        return False
    c = c[["run_id", "epoch", metric]].dropna()
    scale = metric_scale(metric, c[metric])
    g = c.groupby("epoch")[metric].agg(["mean", "std", "count"]).reset_index()
    m, s = g["mean"] * scale, g["std"].fillna(0) * scale
    n = runs["run_id"].nunique()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.plot(g["epoch"], m, color=color, lw=2, marker="o" if len(g) <= 20 else None, ms=4,
            label=wrap(f"{label} (n={n})"))
    if n > 1:
        hi = 100.0 if scale == 100.0 else None  # a band never leaves the metric's range
        ax.fill_between(g["epoch"], (m - s).clip(lower=0), (m + s).clip(upper=hi), color=color, alpha=0.2, lw=0)
    return True


def label_metric(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


# ----------------------------------------------------------------------------------------------------------------
# Generic (any sweep)
# ----------------------------------------------------------------------------------------------------------------

def generic_figures(store: Store, out: Path) -> tuple[list[Figure], list[Skipped]]:
    apply_style()
    figs, skipped = [], []
    done = store.done
    known = [m for p in papers() for m in p.methods]
    for spec, d in (done.groupby("spec", sort=True) if not done.empty else []):
        varying = varying_columns(d, setting_columns(d))
        common = common_label(d, varying)
        d = d.assign(line=line_labels(d, varying))
        metric = next((m for m in ("test_acc", "task_em") if m in d and d[m].notna().any()), None)
        if metric is None:
            skipped.append(Skipped(f"{spec}: {label_metric('test_acc')} per method", "no test_acc in the runs"))
        else:
            order = sorted(dict.fromkeys(d["variant"]),
                           key=lambda v: known.index(v.split(" ")[0]) if v.split(" ")[0] in known else len(known))
            figs.append(draw_bars(d, metric, out, f"generic_{slug(spec)}_{metric}",
                                  f"{spec}: {label_metric(metric)} per method", common, order=order))
        fig = _val_curves(store, d, spec, common, out)
        (figs if isinstance(fig, Figure) else skipped).append(fig)
    return figs, skipped


def _val_curves(store: Store, d: pd.DataFrame, spec: str, common: str, out: Path) -> Figure | Skipped:
    """Validation accuracy per epoch: one line per (method, setting), the MAX_LINES best by final validation
    (else test) accuracy (the best of each method first); only the drawn runs' metrics.jsonl are read."""
    title = f"{spec}: validation accuracy per epoch"
    logged = [os.path.isfile(os.path.join(str(r), METRICS)) for r in d["run_dir"]]
    d = d.assign(_logged=logged)
    no_log = int((~d["_logged"]).sum())
    lg = d[d["_logged"]]
    if lg.empty:
        return Skipped(title, f"no run of the spec has a per-epoch log ({METRICS})")
    score_col = next((m for m in ("val_acc", "test_acc", "task_em") if m in lg and lg[m].notna().any()), None)
    keys = list(dict.fromkeys(zip(lg["variant"], lg["line"])))
    if score_col is None:
        scores = dict.fromkeys(keys, float("nan"))
    else:
        scores = pd.to_numeric(lg[score_col], errors="coerce").groupby([lg["variant"], lg["line"]],
                                                                       sort=False).mean().to_dict()
        scores = {k: scores.get(k, float("nan")) for k in keys}
    best_per_variant = []
    for v in dict.fromkeys(lg["variant"]):
        mine = {k: s for k, s in scores.items() if k[0] == v}
        best_per_variant += top_k(mine, 1)[0]
    kept, rest = top_k(scores, MAX_LINES, first=best_per_variant)
    runs = lg[[k in set(kept) for k in zip(lg["variant"], lg["line"])]]
    curves = store.curves(runs["run_id"])
    if curves.empty or "val_acc" not in curves or curves["val_acc"].isna().all():
        return Skipped(title, f"no val_acc in {METRICS}")
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = color_map([f"{v} {ln}" for v, ln in kept])
    drawn = 0
    for v, ln in kept:
        r = runs[(runs["variant"] == v) & (runs["line"] == ln)]
        drawn += draw_band(ax, r, curves, "val_acc", ", ".join(filter(None, [variant_label(v), ln])),
                           colors[f"{v} {ln}"])
    if not drawn:
        plt.close(fig)
        return Skipped(title, f"no val_acc in the {METRICS} of the drawn runs")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label_metric("val_acc"))
    ax.set_title(f"{title}\n{common}", fontsize=11)
    legend_below(fig, ax, drawn)
    caption = "Mean over seeds, band ± 1 std" + (f"; {common}." if common else ".")
    caption += rest_note([", ".join(filter(None, [variant_label(v), ln])) for v, ln in rest], "method/setting lines",
                         f"lower {score_col or 'score'}; the best line of each method is always drawn")
    if no_log:
        caption += f" {no_log} of {len(d)} runs have no per-epoch log ({METRICS}) and are not in the curves."
    return save_figure(fig, out, f"generic_{slug(spec)}_val_curves", title, caption, list(runs["run_id"]))


def wrap(label: str, width: int = 90) -> str:
    """A legend label on lines of at most `width` characters."""
    return textwrap.fill(str(label), width, break_long_words=False) if len(str(label)) > width else str(label)


def legend_below(fig: plt.Figure, ax, n: int, **kw) -> bool:
    """The legend of `ax`: inside when short (returns False), else one figure legend below the axes, the figure
    grown to hold it (returns True: the lines of other axes need no legend of their own)."""
    if n <= 4:
        ax.legend(loc="best", **kw)
        return False
    handles, labels = ax.get_legend_handles_labels()
    ncol = 1 if max(map(len, labels), default=0) > 45 else 2
    w, h = fig.get_size_inches()
    fig.set_size_inches(w, h + 0.2 * math.ceil(len(labels) / ncol) + 0.3)
    fig.set_layout_engine("constrained")
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False, **kw)
    return True


def draw_bars(d: pd.DataFrame, metric: str, out: Path, stem: str, title: str, common: str,
          order: list[str] | None = None, truncate: bool = False, higher: bool = True) -> Figure:
    """Grouped bars: x = method (variant), hue = the varying setting; error bars = std over seeds. At most
    MAX_GROUPS methods and MAX_LINES settings (the best by mean `metric`; the others named in the caption)."""
    scale = metric_scale(metric, d[metric])
    g = (d.groupby(["variant", "line"], sort=False)[metric].agg(["mean", "std", "count"]).reset_index())
    g["mean"], g["std"] = g["mean"] * scale, g["std"].fillna(0) * scale
    variants = order or list(dict.fromkeys(g["variant"]))
    variants = [v for v in variants if v in set(g["variant"])]
    lines = list(dict.fromkeys(g["line"]))
    by_line = g.groupby("line", sort=False)["mean"].max()
    lines, rest_lines = top_k({ln: by_line.get(ln, float("nan")) for ln in lines}, MAX_LINES, higher)
    by_var = g.groupby("variant", sort=False)["mean"].max()
    variants, rest_vars = top_k({v: by_var.get(v, float("nan")) for v in variants}, MAX_GROUPS, higher)
    g = g[g["line"].isin(lines) & g["variant"].isin(variants)]
    colors = color_map(lines)
    ncol = 1 if max(map(len, lines), default=0) > 45 else 2
    rows = sum(wrap(ln or "all runs").count("\n") + 1 for ln in lines) / ncol if len(lines) > 1 or lines[0] else 0
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, 1.4 * len(variants) * max(1, len(lines)) ** 0.5 + 2)),
                                    4.5 + 0.2 * math.ceil(rows)), layout="constrained")
    width = 0.8 / max(1, len(lines))
    for j, ln in enumerate(lines):
        sub = g[g["line"] == ln].set_index("variant").reindex(variants)
        x = np.arange(len(variants)) + (j - (len(lines) - 1) / 2) * width
        ax.bar(x, sub["mean"], width * 0.95, yerr=sub["std"], capsize=4 if len(lines) <= 4 else 1.5,
               color=colors[ln], label=wrap(ln or "all runs"), error_kw={"lw": 1.2 if len(lines) <= 4 else 0.8})
        if len(lines) * len(variants) <= 24:  # value labels only while they fit
            for xi, m, s, n in zip(x, sub["mean"], sub["std"], sub["count"]):
                if pd.notna(m):
                    ax.annotate(f"{m:.1f}\n(n={int(n)})", (xi, m + (s if pd.notna(s) else 0)), ha="center",
                                va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(np.arange(len(variants)), [variant_label(v) for v in variants],
                  rotation=20 if len(variants) > 3 else 0, ha="right" if len(variants) > 3 else "center")
    ax.set_xlabel("method")
    ax.set_ylabel(label_metric(metric))
    hi = float((g["mean"] + g["std"]).max()) if len(g) else 1.0
    lo = float((g["mean"] - g["std"]).min()) if len(g) else 0.0
    if truncate and lo > 0:
        span = max(hi - lo, 1.0)
        ax.set_ylim(max(0.0, lo - 0.6 * span), hi + 0.45 * span)
        ax.set_ylabel(label_metric(metric) + " (axis truncated)")
    else:
        ax.set_ylim(0, hi * 1.15 if hi > 0 else 1)
    ax.set_title(f"{title}\n{common}" if common else title, fontsize=11)
    if lines and (len(lines) > 1 or lines[0]):  # below the axes: long setting labels never squeeze the bars
        fig.legend(loc="outside lower center", ncol=ncol, frameon=False,
                   fontsize=9 if len(lines) <= 4 else 8)
    worse = "lower" if higher else "higher"
    caption = "Mean over seeds, error bars ± 1 std (sample)" + (f"; {common}." if common else ".")
    caption += rest_note(rest_lines, "settings", f"{worse} best {metric} across methods")
    caption += rest_note([variant_label(v) for v in rest_vars], "methods", f"{worse} best {metric}")
    return save_figure(fig, out, stem, title, caption, list(d["run_id"]))


# ----------------------------------------------------------------------------------------------------------------
# Forget Me Not
# ----------------------------------------------------------------------------------------------------------------
