"""Figures of the report (matplotlib/seaborn, PNG + PDF): per paper, and a generic pair for any sweep."""
from __future__ import annotations

import re
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

from report.tables import (Store, _key, dataset_label, metric_scale, noise_label, setting_columns, variant_label, varying_columns)

DPI = 150


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


def draw_band(ax, runs: pd.DataFrame, curves: pd.DataFrame, metric: str, label: str, color) -> bool:
    """Mean over seeds per epoch, shaded ± 1 std; False when the metric was not logged."""
    c = curves[curves["run_id"].isin(runs["run_id"])]
    if c.empty or metric not in c or c[metric].notna().sum() == 0:
        return False
    c = c[["run_id", "epoch", metric]].dropna()
    scale = metric_scale(metric, c[metric])
    g = c.groupby("epoch")[metric].agg(["mean", "std", "count"]).reset_index()
    m, s = g["mean"] * scale, g["std"].fillna(0) * scale
    n = runs["run_id"].nunique()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.plot(g["epoch"], m, color=color, lw=2, marker="o" if len(g) <= 20 else None, ms=4,
            label=f"{label} (n={n})")
    if n > 1:
        hi = 100.0 if scale == 100.0 else None  # a band never leaves the metric's range
        ax.fill_between(g["epoch"], (m - s).clip(lower=0), (m + s).clip(upper=hi), color=color, alpha=0.2, lw=0)
    return True


def label_metric(metric: str) -> str:
    from report.tables import METRIC_LABELS
    return METRIC_LABELS.get(metric, metric)


# ----------------------------------------------------------------------------------------------------------------
# Generic (any sweep)
# ----------------------------------------------------------------------------------------------------------------

def generic_figures(store: Store, out: Path) -> tuple[list[Figure], list[Skipped]]:
    apply_style()
    figs, skipped = [], []
    done = store.done
    for spec, d in (done.groupby("spec", sort=True) if not done.empty else []):
        varying = varying_columns(d, setting_columns(d))
        common = common_label(d, varying)
        d = d.assign(line=[parts_label(r, varying) for _, r in d.iterrows()])
        metric = next((m for m in ("test_acc", "task_em") if m in d and d[m].notna().any()), None)
        if metric is None:
            skipped.append(Skipped(f"{spec}: {label_metric('test_acc')} per method", "no test_acc in the runs"))
        else:
            known = [m for p in papers() for m in p.methods]
            order = sorted(dict.fromkeys(d["variant"]),
                           key=lambda v: known.index(v.split(" ")[0]) if v.split(" ")[0] in known else len(known))
            figs.append(draw_bars(d, metric, out, f"generic_{slug(spec)}_{metric}",
                              f"{spec}: {label_metric(metric)} per method", common, order=order))
        curves = store.curves()
        mine = curves[curves["run_id"].isin(d["run_id"])] if not curves.empty else curves
        if mine.empty or "val_acc" not in mine or mine["val_acc"].isna().all():
            skipped.append(Skipped(f"{spec}: validation accuracy per epoch", "no val_acc in metrics.jsonl"))
            continue
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        keys = list(dict.fromkeys(zip(d["variant"], d["line"])))
        colors = color_map([f"{v} {ln}" for v, ln in keys])
        for v, ln in keys:
            runs = d[(d["variant"] == v) & (d["line"] == ln)]
            draw_band(ax, runs, curves, "val_acc", ", ".join(filter(None, [variant_label(v), ln])), colors[f"{v} {ln}"])
        ax.set_xlabel("epoch")
        ax.set_ylabel(label_metric("val_acc"))
        ax.set_title(f"{spec}: validation accuracy per epoch\n{common}", fontsize=11)
        ax.legend(loc="best")
        figs.append(save_figure(fig, out, f"generic_{slug(spec)}_val_curves", f"{spec}: validation accuracy per epoch",
                          f"Mean over seeds, band ± 1 std; {common}.", list(d["run_id"])))
    return figs, skipped


def draw_bars(d: pd.DataFrame, metric: str, out: Path, stem: str, title: str, common: str,
          order: list[str] | None = None, truncate: bool = False) -> Figure:
    """Grouped bars: x = method (variant), hue = the varying setting; error bars = std over seeds."""
    scale = metric_scale(metric, d[metric])
    g = (d.groupby(["variant", "line"], sort=False)[metric].agg(["mean", "std", "count"]).reset_index())
    g["mean"], g["std"] = g["mean"] * scale, g["std"].fillna(0) * scale
    variants = order or list(dict.fromkeys(g["variant"]))
    variants = [v for v in variants if v in set(g["variant"])]
    lines = list(dict.fromkeys(g["line"]))
    colors = color_map(lines)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(variants) * max(1, len(lines)) ** 0.5 + 2), 4.5),
                           layout="constrained")
    width = 0.8 / max(1, len(lines))
    for j, ln in enumerate(lines):
        sub = g[g["line"] == ln].set_index("variant").reindex(variants)
        x = np.arange(len(variants)) + (j - (len(lines) - 1) / 2) * width
        ax.bar(x, sub["mean"], width * 0.95, yerr=sub["std"], capsize=4, color=colors[ln],
                      label=f"{ln or 'all runs'}", error_kw={"lw": 1.2})
        for xi, m, s, n in zip(x, sub["mean"], sub["std"], sub["count"]):
            if pd.notna(m):
                ax.annotate(f"{m:.1f}\n(n={int(n)})", (xi, m + (s if pd.notna(s) else 0)), ha="center",
                            va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(np.arange(len(variants)), [variant_label(v) for v in variants],
                  rotation=20 if len(variants) > 3 else 0, ha="right" if len(variants) > 3 else "center")
    ax.set_xlabel("method")
    ax.set_ylabel(label_metric(metric))
    hi = float((g["mean"] + g["std"]).max())
    lo = float((g["mean"] - g["std"]).min())
    if truncate and lo > 0:
        span = max(hi - lo, 1.0)
        ax.set_ylim(max(0.0, lo - 0.6 * span), hi + 0.45 * span)
        ax.set_ylabel(label_metric(metric) + " (axis truncated)")
    else:
        ax.set_ylim(0, hi * 1.15 if hi > 0 else 1)
    ax.set_title(f"{title}\n{common}" if common else title, fontsize=11)
    if len(lines) > 1 or lines[0]:  # below the axes, so long setting labels never squeeze the bars
        fig.legend(loc="outside lower center", ncol=1 if max(map(len, lines)) > 45 else 2, frameon=False)
    return save_figure(fig, out, stem, title, f"Mean over seeds, error bars ± 1 std (sample); {common}.",
                 list(d["run_id"]))


# ----------------------------------------------------------------------------------------------------------------
# Forget Me Not
# ----------------------------------------------------------------------------------------------------------------
