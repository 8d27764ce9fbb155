"""Context-free replay figures for the report: forgetting against task accuracy per arm."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from report.plots import (MAX_FIGURES, MAX_LINES, Figure, Skipped, apply_style, color_map, common_label,
                          label_metric, parts_label, rest_note, save_figure, slug, top_k)
from report.tables import (Store, metric_scale, paper_methods,
                           setting_columns, variant_label, varying_columns)


def figures(store: Store, out: Path) -> tuple[list[Figure], list[Skipped]]:
    apply_style()
    done = store.done
    d = done[done["paper"] == "contextfree"] if not done.empty else done
    title = "Replay/KL: forgetting against task gain per arm"
    if d.empty:
        return [], [Skipped(title, "no context-free replay/KL runs in the store")]
    if not {"forgetting_bpc", "task_em"} <= set(d.columns):
        return [], [Skipped(title, "runs lack forgetting_bpc or task_em")]
    figs = []
    varying = varying_columns(d, setting_columns(d))
    colors = color_map(list(dict.fromkeys(d["variant"])))
    groups = dict(list(d.groupby("setting_key", sort=False)))
    # one figure per setting: the best settings by mean task accuracy; the rest listed as skipped
    em = {k: float(pd.to_numeric(g["task_em"], errors="coerce").mean()) for k, g in groups.items()}
    kept, rest = top_k(em, MAX_FIGURES)
    skipped = []
    if rest:
        labels = [parts_label(groups[k].iloc[0], varying) or k for k in rest]
        skipped.append(Skipped(f"{title}, {len(rest)} more settings",
                               f"one figure per setting, the {len(kept)} with the best mean task accuracy drawn;"
                               + rest_note(labels, "settings", "lower task accuracy").removeprefix(" Not drawn:")))
    for i, (skey, g) in enumerate(((k, groups[k]) for k in kept), 1):
        common = common_label(g, []) + (", " + parts_label(g.iloc[0], varying) if parts_label(g.iloc[0], varying) else "")
        sc = metric_scale("task_em", g["task_em"])
        fig, ax = plt.subplots(figsize=(9.5, 5.5), layout="constrained")
        arms = list(paper_methods("contextfree"))
        order = sorted(dict.fromkeys(g["variant"]), key=lambda v: (arms.index(v.split(" ")[0])
                                                                   if v.split(" ")[0] in arms else len(arms), v))
        v_em = pd.to_numeric(g["task_em"], errors="coerce").groupby(g["variant"]).mean()
        order, rest_v = top_k({v: v_em.get(v, float("nan")) for v in order}, MAX_LINES)
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
               ylabel=label_metric("task_em") + " (higher is better ↑)",
               title=f"{title}\n{common}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        stem = f"contextfree_tradeoff_{slug(str(g.iloc[0]['dataset']))}_{slug(str(g.iloc[0]['model']))}_{i}"
        figs.append(save_figure(fig, out, stem, title,
                          f"Mean ± 1 std over seeds; the best arms sit top-left. {common}."
                          + rest_note([variant_label(v) for v in rest_v], "arms", "lower task accuracy"),
                          list(g["run_id"])))
    return figs, skipped
