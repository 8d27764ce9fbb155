"""KNOW figures for the report: accuracy against the scaling factor (measured beside the published curve)
and the trajectory in weight space (PCA)."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bench.paper import PAPERS

from report.plots import (MAX_FIGURES, MAX_LINES, Figure, Skipped, apply_style, color_map, common_label,
                          label_metric, parts_label, rest_note, save_figure, slug, top_k)
from report.tables import (Store, load_reference, method_label, metric_scale, setting_columns, varying_columns)


def published_scaling() -> dict[float, float]:
    """KNOW's published accuracy per scaling factor (card section 7, 100 % pretraining data: naive = ×1, KNOW
    ×2/×4/×8), read from the paper's reference rows (the one place the numbers are written)."""
    ref = load_reference(PAPERS.get("know"))
    rows = ref[(ref["row"] == "100%") & ref["value_num"].notna()]
    scale = {"naive": 1.0, "know_x2": 2.0, "know_x4": 4.0, "know_x8": 8.0}
    return {scale[m]: float(v) for m, v in zip(rows["method"], rows["value_num"]) if m in scale}


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


def figures(store: Store, out: Path) -> tuple[list[Figure], list[Skipped]]:
    apply_style()
    figs, skipped = [], []
    done = store.done
    d = done[done["paper"] == "know"] if not done.empty else done
    if d.empty:
        return figs, [Skipped("KNOW figures", "no KNOW runs in the store")]
    d = d.assign(scale=[_scale_of(r) for r in d[[c for c in ("scale", "method", "config.method.params.scale")
                                                 if c in d]].to_dict("records")],
                 family=[("KNOW" if str(m).startswith("know_x") else method_label(m)) for m in d["method"]])
    varying = varying_columns(d, setting_columns(d))
    groups = dict(list(d.groupby("setting_key", sort=False)))
    # one figure per setting: those with the most variants (scale points) first, then the best test accuracy
    rank = {k: (-g["variant"].nunique(), -float(pd.to_numeric(g["test_acc"], errors="coerce").mean()))
            for k, g in groups.items()}
    kept = [k for k in groups if k in set(sorted(groups, key=lambda k: rank[k])[:MAX_FIGURES])]
    rest = sorted((k for k in groups if k not in kept), key=lambda k: rank[k])
    if rest:
        labels = [parts_label(groups[k].iloc[0], varying) or k for k in rest]
        skipped.append(Skipped(f"KNOW: accuracy against scaling factor, {len(rest)} more settings",
                               f"one figure per setting, the {len(kept)} with the most variants and the best "
                               "test accuracy drawn;" + rest_note(labels, "settings", "fewer variants or lower "
                                                                  "test accuracy").removeprefix(" Not drawn:")))
    for i, (skey, g) in enumerate(((k, groups[k]) for k in kept), 1):
        common = common_label(g, []) + (", " + parts_label(g.iloc[0], varying) if parts_label(g.iloc[0], varying) else "")
        fig, (ax, axp) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
        g = g.assign(suffix=[str(v)[len(str(m)):] for v, m in zip(g["variant"], g["method"])])
        naive = g[g["method"] == "naive"]
        lines = [k for k in dict.fromkeys(zip(g["family"], g["suffix"])) if k[0] != method_label("naive")]
        line_acc = pd.to_numeric(g["test_acc"], errors="coerce").groupby([g["family"], g["suffix"]]).mean()
        lines, rest_lines = top_k({k: line_acc.get(k, float("nan")) for k in lines}, MAX_LINES)
        colors = color_map([f + s for f, s in lines])
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
        ax.set(xlabel="scaling factor (data ×, log scale)", ylabel=label_metric("test_acc"), title="measured")
        ax.legend(loc="best", fontsize=8)
        published = published_scaling()
        xs = sorted(published)
        axp.plot(xs, [published[x] for x in xs], marker="s", ls="--", color="black", label="KNOW (published)")
        axp.axhline(published[1], ls="--", lw=1, color="grey", label="naive (published)")
        axp.set_xscale("log", base=2)
        axp.set_xticks([1, 2, 4, 8], ["×1", "×2", "×4", "×8"])
        axp.minorticks_off()
        axp.set(xlabel="scaling factor (log scale)", ylabel="CIFAR-10 top-1 accuracy (%)",
                title="published: CIFAR-100→CIFAR-10, ResNet18, 100%")
        axp.legend(loc="lower right")
        fig.suptitle(f"KNOW: accuracy against scaling factor ({common})", fontsize=12)
        stem = f"know_scaling_{slug(str(g.iloc[0]['dataset']))}_{slug(str(g.iloc[0]['model']))}_{i}"
        figs.append(save_figure(fig, out, stem, "KNOW: accuracy against scaling factor",
                          f"Left: measured, mean ± 1 std over seeds ({common}); right: the paper's numbers "
                          "(card section 7), on a separate axis because the settings differ."
                          + rest_note([f + x for f, x in rest_lines], "lines", "lower mean test accuracy"),
                          list(g["run_id"])))
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
    first = next((p for r in d["run_dir"] for p in sorted((Path(r) / "artifacts").glob("*trajectory*.pt"))), None)
    paths = [first] if first is not None else []
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
    return save_figure(fig, out, "know_trajectory_pca", "KNOW: PCA of the weight trajectory",
                 f"From {where}; PCA fitted on the recorded trajectory (all conv/linear kernels and biases)." + note,
                 runs)


# ----------------------------------------------------------------------------------------------------------------
# Context-free replay / KL
# ----------------------------------------------------------------------------------------------------------------
