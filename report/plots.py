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

from report.tables import (PAPERS, Store, _key, dataset_label, method_label,  # noqa: E402
                           metric_scale, noise_label, setting_columns, variant_label, varying_columns)

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


def _style() -> None:
    sns.set_theme(style="whitegrid", context="notebook", font_scale=1.0)
    plt.rcParams.update({"figure.dpi": DPI, "savefig.dpi": DPI, "axes.titlesize": 12, "axes.labelsize": 11,
                         "legend.fontsize": 9})


def _save(fig: plt.Figure, out: Path, stem: str, title: str, caption: str, runs: list[str]) -> Figure:
    out.mkdir(parents=True, exist_ok=True)
    png, pdf = out / f"{stem}.png", out / f"{stem}.pdf"
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(png)
    fig.savefig(pdf)
    plt.close(fig)
    return Figure(stem, title, caption, png, pdf, runs)


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")[:60] or "x"


def _colors(names: list[str]) -> dict[str, tuple]:
    pal = sns.color_palette("tab10", max(len(names), 1)) if len(names) <= 10 else sns.color_palette("husl",
                                                                                                      len(names))
    return dict(zip(names, pal))


def _parts(row: pd.Series, varying: list[str], skip: tuple[str, ...] = ()) -> str:
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


def _common(df: pd.DataFrame, varying: list[str]) -> str:
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


def _band(ax, runs: pd.DataFrame, curves: pd.DataFrame, metric: str, label: str, color) -> bool:
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


def _label_metric(metric: str) -> str:
    from report.tables import METRIC_LABELS
    return METRIC_LABELS.get(metric, metric)


# ----------------------------------------------------------------------------------------------------------------
# Generic (any sweep)
# ----------------------------------------------------------------------------------------------------------------

def generic_figures(store: Store, out: Path) -> tuple[list[Figure], list[Skipped]]:
    _style()
    figs, skipped = [], []
    done = store.done
    for spec, d in (done.groupby("spec", sort=True) if not done.empty else []):
        varying = varying_columns(d, setting_columns(d))
        common = _common(d, varying)
        d = d.assign(line=[_parts(r, varying) for _, r in d.iterrows()])
        metric = next((m for m in ("test_acc", "task_em") if m in d and d[m].notna().any()), None)
        if metric is None:
            skipped.append(Skipped(f"{spec}: {_label_metric('test_acc')} per method", "no test_acc in the runs"))
        else:
            known = [m for p in PAPERS.values() for m in p.methods]
            order = sorted(dict.fromkeys(d["variant"]),
                           key=lambda v: known.index(v.split(" ")[0]) if v.split(" ")[0] in known else len(known))
            figs.append(_bars(d, metric, out, f"generic_{_slug(spec)}_{metric}",
                              f"{spec}: {_label_metric(metric)} per method", common, order=order))
        curves = store.curves()
        mine = curves[curves["run_id"].isin(d["run_id"])] if not curves.empty else curves
        if mine.empty or "val_acc" not in mine or mine["val_acc"].isna().all():
            skipped.append(Skipped(f"{spec}: validation accuracy per epoch", "no val_acc in metrics.jsonl"))
            continue
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        keys = list(dict.fromkeys(zip(d["variant"], d["line"])))
        colors = _colors([f"{v} {ln}" for v, ln in keys])
        for v, ln in keys:
            runs = d[(d["variant"] == v) & (d["line"] == ln)]
            _band(ax, runs, curves, "val_acc", ", ".join(filter(None, [variant_label(v), ln])), colors[f"{v} {ln}"])
        ax.set_xlabel("epoch")
        ax.set_ylabel(_label_metric("val_acc"))
        ax.set_title(f"{spec}: validation accuracy per epoch\n{common}", fontsize=11)
        ax.legend(loc="best")
        figs.append(_save(fig, out, f"generic_{_slug(spec)}_val_curves", f"{spec}: validation accuracy per epoch",
                          f"Mean over seeds, band ± 1 std; {common}.", list(d["run_id"])))
    return figs, skipped


def _bars(d: pd.DataFrame, metric: str, out: Path, stem: str, title: str, common: str,
          order: list[str] | None = None, truncate: bool = False) -> Figure:
    """Grouped bars: x = method (variant), hue = the varying setting; error bars = std over seeds."""
    scale = metric_scale(metric, d[metric])
    g = (d.groupby(["variant", "line"], sort=False)[metric].agg(["mean", "std", "count"]).reset_index())
    g["mean"], g["std"] = g["mean"] * scale, g["std"].fillna(0) * scale
    variants = order or list(dict.fromkeys(g["variant"]))
    variants = [v for v in variants if v in set(g["variant"])]
    lines = list(dict.fromkeys(g["line"]))
    colors = _colors(lines)
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
    ax.set_ylabel(_label_metric(metric))
    hi = float((g["mean"] + g["std"]).max())
    lo = float((g["mean"] - g["std"]).min())
    if truncate and lo > 0:
        span = max(hi - lo, 1.0)
        ax.set_ylim(max(0.0, lo - 0.6 * span), hi + 0.45 * span)
        ax.set_ylabel(_label_metric(metric) + " (axis truncated)")
    else:
        ax.set_ylim(0, hi * 1.15 if hi > 0 else 1)
    ax.set_title(f"{title}\n{common}" if common else title, fontsize=11)
    if len(lines) > 1 or lines[0]:  # below the axes, so long setting labels never squeeze the bars
        fig.legend(loc="outside lower center", ncol=1 if max(map(len, lines)) > 45 else 2, frameon=False)
    return _save(fig, out, stem, title, f"Mean over seeds, error bars ± 1 std (sample); {common}.",
                 list(d["run_id"]))


# ----------------------------------------------------------------------------------------------------------------
# Forget Me Not
# ----------------------------------------------------------------------------------------------------------------

def forgetmenot_figures(store: Store, out: Path) -> tuple[list[Figure], list[Skipped]]:
    _style()
    figs, skipped = [], []
    done = store.done
    d = done[done["paper"] == "forgetmenot"] if not done.empty else done
    if d.empty:
        return figs, [Skipped("Forget Me Not figures", "no Forget Me Not runs in the store")]
    curves = store.curves()
    naive = d[d["method"] == "naive"]
    if naive.empty:
        skipped.append(Skipped("Forget Me Not: validation accuracy and forget fraction per epoch", "no naive runs"))
    for (ds, model), g in naive.groupby(["dataset", "model"], sort=False):
        varying = varying_columns(g, setting_columns(g))
        g = g.assign(line=[_parts(r, varying) or noise_label(r) for _, r in g.iterrows()])
        have_ff = not curves.empty and "forget_fraction" in curves and \
            curves[curves["run_id"].isin(g["run_id"])]["forget_fraction"].notna().any()
        fig, axes = plt.subplots(1, 2 if have_ff else 1, figsize=(12, 4.5) if have_ff else (7.5, 4.5),
                                 squeeze=False)
        lines = list(dict.fromkeys(g["line"]))
        colors = _colors(lines)
        for ln in lines:
            runs = g[g["line"] == ln]
            _band(axes[0, 0], runs, curves, "val_acc", ln, colors[ln])
            if have_ff:
                _band(axes[0, 1], runs, curves, "forget_fraction", ln, colors[ln])
        axes[0, 0].set(xlabel="epoch", ylabel=_label_metric("val_acc"), title="validation accuracy")
        axes[0, 0].legend(loc="best", title="label noise")
        if have_ff:
            axes[0, 1].set(xlabel="epoch", ylabel=_label_metric("forget_fraction"),
                           title="forget fraction F_e (correct at e, wrong at the end)")
            axes[0, 1].legend(loc="best", title="label noise")
        common = f"{dataset_label(g.iloc[0])}, {model}"
        fig.suptitle(f"Forget Me Not, single model (naive): {common}", fontsize=12)
        note = "" if have_ff else " Forget fraction not logged in these runs' metrics.jsonl."
        if have_ff and "forget_split" in curves:
            splits = curves[curves["run_id"].isin(g["run_id"])]["forget_split"].dropna().unique()
            note = f" Forget fraction measured on the {'/'.join(map(str, splits))} split." if len(splits) else ""
        if not have_ff:
            skipped.append(Skipped(f"forget fraction per epoch ({dataset_label(g.iloc[0])}, {model})",
                                   "no forget_fraction in the naive runs' metrics.jsonl"))
        figs.append(_save(fig, out, f"forgetmenot_curves_{_slug(ds)}_{_slug(model)}",
                          f"Forget Me Not: validation accuracy and forget fraction per epoch ({common})",
                          f"Naive runs; mean over seeds, band ± 1 std; one line per label-noise level.{note}",
                          list(g["run_id"])))
    order = [m for m in PAPERS["forgetmenot"].methods]
    variants = [v for m in order for v in dict.fromkeys(d[d["method"] == m]["variant"])]
    varying = varying_columns(d, setting_columns(d))
    d2 = d.assign(line=[_parts(r, varying) for _, r in d.iterrows()])
    missing = [method_label(m) for m in ("naive", "ensemble", "kf_i", "kf_inf", "distilled_kf")
               if m not in set(d["method"])]
    fig = _bars(d2, "test_acc", out, "forgetmenot_methods", "Forget Me Not: test accuracy per method",
                _common(d2, varying), order=variants, truncate=True)
    if missing:
        fig.caption += " Not run: " + ", ".join(missing) + "."
    figs.append(fig)
    return figs, skipped


# ----------------------------------------------------------------------------------------------------------------
# KNOW
# ----------------------------------------------------------------------------------------------------------------

PUBLISHED_KNOW = {1: 92.40, 2: 93.00, 4: 93.27, 8: 93.55}  # card section 7, 100% pretraining data


def _scale_of(row: pd.Series) -> float | None:
    """The data-scaling factor of a KNOW-family run: its `scale` metric ((1/r)^steps), else from the name."""
    v = pd.to_numeric(row.get("scale"), errors="coerce")
    if pd.notna(v):
        return float(v)
    m = re.search(r"_x(\d+)$", str(row["method"]))
    if m:
        return float(m.group(1))
    v = pd.to_numeric(row.get("config.method.params.scale"), errors="coerce")
    if pd.notna(v):
        return float(v)
    return 1.0 if row["method"] == "naive" else None


def know_figures(store: Store, out: Path) -> tuple[list[Figure], list[Skipped]]:
    _style()
    figs, skipped = [], []
    done = store.done
    d = done[done["paper"] == "know"] if not done.empty else done
    if d.empty:
        return figs, [Skipped("KNOW figures", "no KNOW runs in the store")]
    d = d.assign(scale=[_scale_of(r) for _, r in d.iterrows()],
                 family=[("KNOW" if str(m).startswith("know_x") else method_label(m)) for m in d["method"]])
    varying = varying_columns(d, setting_columns(d))
    for i, (skey, g) in enumerate(d.groupby("setting_key", sort=False), 1):
        common = _common(g, []) + (", " + _parts(g.iloc[0], varying) if _parts(g.iloc[0], varying) else "")
        fig, (ax, axp) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
        g = g.assign(suffix=[str(v)[len(str(m)):] for v, m in zip(g["variant"], g["method"])])
        naive = g[g["method"] == "naive"]
        lines = [k for k in dict.fromkeys(zip(g["family"], g["suffix"])) if k[0] != method_label("naive")]
        colors = _colors([f + s for f, s in lines])
        sc = metric_scale("test_acc", g["test_acc"])
        for fam, suf in lines:
            f = g[(g["family"] == fam) & (g["suffix"] == suf)]
            no_scale = f[f["scale"].isna()]
            f = f[f["scale"].notna()]
            anchor = naive[naive["suffix"] == suf] if (naive["suffix"] == suf).any() else naive
            f = pd.concat([anchor, f])  # every extrapolation starts from Θ0: the naive ×1 point
            label = fam + suf
            if len(f):
                a = f.groupby("scale")["test_acc"].agg(["mean", "std", "count"]).reset_index()
                ax.errorbar(a["scale"], a["mean"] * sc, yerr=a["std"].fillna(0) * sc, marker="o", capsize=4,
                            lw=2, color=colors[label], label=f"{label} (n={int(a['count'].min())}/point)")
            if len(no_scale):
                ax.axhline(no_scale["test_acc"].mean() * sc, ls=":", color=colors[label],
                           label=f"{label} (scale not recorded)")
        if len(naive):
            ax.axhline(naive["test_acc"].mean() * sc, ls="--", lw=1, color="grey", label="naive (×1) level")
        ticks = sorted({1.0, 2.0, 4.0, 8.0, *g["scale"].dropna().astype(float)})
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [f"×{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set(xlabel="scaling factor (data ×, log scale)", ylabel=_label_metric("test_acc"), title="measured")
        ax.legend(loc="best", fontsize=8)
        xs = sorted(PUBLISHED_KNOW)
        axp.plot(xs, [PUBLISHED_KNOW[x] for x in xs], marker="s", ls="--", color="black", label="KNOW (published)")
        axp.axhline(PUBLISHED_KNOW[1], ls="--", lw=1, color="grey", label="naive (published)")
        axp.set_xscale("log", base=2)
        axp.set_xticks([1, 2, 4, 8], ["×1", "×2", "×4", "×8"])
        axp.minorticks_off()
        axp.set(xlabel="scaling factor (log scale)", ylabel="CIFAR-10 top-1 accuracy (%)",
                title="published: CIFAR-100→CIFAR-10, ResNet18, 100%")
        axp.legend(loc="lower right")
        fig.suptitle(f"KNOW: accuracy against scaling factor ({common})", fontsize=12)
        stem = f"know_scaling_{_slug(str(g.iloc[0]['dataset']))}_{_slug(str(g.iloc[0]['model']))}_{i}"
        figs.append(_save(fig, out, stem, "KNOW: accuracy against scaling factor",
                          f"Left: measured, mean ± 1 std over seeds ({common}); right: the paper's numbers "
                          "(card section 7), on a separate axis because the settings differ.", list(g["run_id"])))
    pca = _know_pca(d, out, store.root)
    if isinstance(pca, Figure):
        figs.append(pca)
    else:
        skipped.append(pca)
    return figs, skipped


def _load_trajectory(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(trajectory [S, P], predicted [K, P] or None) from a run artifact or a KNOW trajectory stage.

    Accepted: a tensor [S, ...]; a dict with `trajectory`/`snapshots` (+ optional `predicted`); or the trajectory
    stage's {kind: [S, P_kind]} (kinds concatenated)."""
    import torch
    obj = torch.load(path, map_location="cpu", weights_only=True)

    def arr(x):
        if isinstance(x, (list, tuple)):
            x = torch.stack([torch.as_tensor(t).flatten().float() for t in x])
        if isinstance(x, dict):
            x = torch.cat([torch.as_tensor(v).float().reshape(len(v), -1) for v in x.values()], dim=1)
        return torch.as_tensor(x).float().reshape(len(x), -1).numpy()

    if isinstance(obj, dict):
        traj = next((obj[k] for k in ("trajectory", "snapshots", "points", "pca") if k in obj), None)
        pred = next((obj[k] for k in ("predicted", "predictions", "pred") if k in obj), None)
        if traj is None:
            traj = obj  # the stage layout: {kind: [S, P]}
        return arr(traj), (arr(pred) if pred is not None else None)
    return arr(obj), None


def _pca2(traj: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Project `pts` on the top-2 principal components of `traj` (Gram-matrix PCA: cheap for S rows of P >> S)."""
    if traj.shape[1] <= 2:
        return pts
    mu = traj.mean(0)
    xc = (traj - mu).astype(np.float64)
    w, u = np.linalg.eigh(xc @ xc.T)
    order = np.argsort(w)[::-1][:2]
    w, u = np.clip(w[order], 1e-30, None), u[:, order]
    comps = (xc.T @ u) / np.sqrt(w)                     # [P, 2], orthonormal
    return (pts - mu) @ comps


def _know_pca(d: pd.DataFrame, out: Path, root: Path) -> Figure | Skipped:
    title = "KNOW: 2-D PCA of the weight trajectory with the predicted points"
    paths = [p for r in d["run_dir"] for p in sorted((Path(r) / "artifacts").glob("*trajectory*.pt"))]
    stage = False
    if not paths:  # the shared trajectory stage of the KNOW runs (snapshots only, no predictions)
        paths = sorted(p for base in (root, root.parent)
                       for p in (base / "_stages").glob("know_trajectory-*/trajectory.pt"))
        stage = True
    if not paths:
        return Skipped(title, "no artifacts/*trajectory*.pt in the KNOW runs and no know_trajectory stage")
    path = paths[0]
    try:
        traj, pred = _load_trajectory(path)
        pts = traj if pred is None else np.vstack([traj, pred])
        proj = _pca2(traj, pts)
    except Exception as e:  # an artifact of another shape: say so rather than fail the report
        return Skipped(title, f"could not read {path.name}: {type(e).__name__}: {e}")
    t, p = proj[: len(traj)], proj[len(traj):]
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.plot(t[:, 0], t[:, 1], "-o", color="tab:blue",
            label="recorded Θ0 (full data) … Θ%d (most forgotten)" % (len(t) - 1))
    for i, (x, y) in enumerate(t):
        ax.annotate(f"Θ{i}", (x, y), xytext=(4, 4), textcoords="offset points", fontsize=9)
    if len(p):
        ax.plot(p[:, 0], p[:, 1], "--s", color="tab:red", label="predicted (×2, ×4, ×8)")
        for i, (x, y) in enumerate(p):
            ax.annotate(f"×{2 ** (i + 1)}", (x, y), xytext=(4, 4), textcoords="offset points", fontsize=9)
    ax.set(xlabel="PC 1 (weight units)", ylabel="PC 2 (weight units)",
           title=title if len(p) else "KNOW: 2-D PCA of the recorded weight trajectory")
    ax.legend(loc="best", fontsize=8)
    where = f"{path.parent.parent.name}/{path.parent.name}/{path.name}"
    note = (" The store keeps only the recorded snapshots (the shared trajectory stage), not the predicted "
            "weights: predicted points not shown." if stage or not len(p) else "")
    runs = [] if stage else [path.parent.parent.name]
    return _save(fig, out, "know_trajectory_pca", "KNOW: PCA of the weight trajectory",
                 f"From {where}; PCA fitted on the recorded trajectory (all conv/linear kernels and biases)." + note,
                 runs)


# ----------------------------------------------------------------------------------------------------------------
# Context-free replay / KL
# ----------------------------------------------------------------------------------------------------------------

def contextfree_figures(store: Store, out: Path) -> tuple[list[Figure], list[Skipped]]:
    _style()
    done = store.done
    d = done[done["paper"] == "contextfree"] if not done.empty else done
    title = "Replay/KL: forgetting against task gain per arm"
    if d.empty:
        return [], [Skipped(title, "no context-free replay/KL runs in the store")]
    if not {"forgetting_bpc", "task_em"} <= set(d.columns):
        return [], [Skipped(title, "runs lack forgetting_bpc or task_em")]
    figs = []
    varying = varying_columns(d, setting_columns(d))
    colors = _colors(list(dict.fromkeys(d["variant"])))
    for i, (skey, g) in enumerate(d.groupby("setting_key", sort=False), 1):
        common = _common(g, []) + (", " + _parts(g.iloc[0], varying) if _parts(g.iloc[0], varying) else "")
        sc = metric_scale("task_em", g["task_em"])
        fig, ax = plt.subplots(figsize=(9.5, 5.5), layout="constrained")
        arms = list(PAPERS["contextfree"].methods)
        order = sorted(dict.fromkeys(g["variant"]), key=lambda v: (arms.index(v.split(" ")[0])
                                                                   if v.split(" ")[0] in arms else len(arms), v))
        pts = []
        for v in order:
            f = g[g["variant"] == v]
            x, y = f["forgetting_bpc"].astype(float), f["task_em"].astype(float) * sc
            ax.errorbar(x.mean(), y.mean(), xerr=x.std() if len(f) > 1 else 0, yerr=y.std() if len(f) > 1 else 0,
                        fmt="o", ms=8, capsize=4, color=colors[v], label=f"{variant_label(v)} (n={len(f)})")
            pts.append((x.mean(), y.mean(), v))
        xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        xr, yr = max(np.ptp(xs), 1e-9), max(np.ptp(ys), 1e-9)
        placed: list[tuple[float, float]] = []
        for x, y, v in pts:  # a text label only where it does not collide with another (the legend names all)
            if all(abs(x - px) / xr > 0.12 or abs(y - py) / yr > 0.08 for px, py in placed):
                ax.annotate(variant_label(v), (x, y), xytext=(6, 6), textcoords="offset points", fontsize=9)
                placed.append((x, y))
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(lo, -1.0), max(hi, 5.0))
        ax.set(xlabel="forgetting: increase of corpus-A bits/char (lower is better →  left)",
               ylabel=_label_metric("task_em") + " (higher is better ↑)",
               title=f"{title}\n{common}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        stem = f"contextfree_tradeoff_{_slug(str(g.iloc[0]['dataset']))}_{_slug(str(g.iloc[0]['model']))}_{i}"
        figs.append(_save(fig, out, stem, title,
                          f"Mean ± 1 std over seeds; the best arms sit top-left. {common}.", list(g["run_id"])))
    return figs, []
