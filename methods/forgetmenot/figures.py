"""Forget Me Not figures for the report: forget fraction and validation accuracy per epoch, test accuracy
per method."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from bench.store import METRICS

from report.plots import (MAX_LINES, Figure, Skipped, apply_style, color_map, common_label, draw_band, draw_bars,
                          label_metric, legend_below, line_labels, rest_note, save_figure, slug, top_k)
from report.tables import (Store, dataset_label, method_label, noise_label, paper_methods,
                           setting_columns, varying_columns)


def figures(store: Store, out: Path) -> tuple[list[Figure], list[Skipped]]:
    apply_style()
    figs, skipped = [], []
    done = store.done
    d = done[done["paper"] == "forgetmenot"] if not done.empty else done
    if d.empty:
        return figs, [Skipped("Forget Me Not figures", "no Forget Me Not runs in the store")]
    naive = d[d["method"] == "naive"]
    if naive.empty:
        skipped.append(Skipped("Forget Me Not: validation accuracy and forget fraction per epoch", "no naive runs"))
    for (ds, model), g in naive.groupby(["dataset", "model"], sort=False):
        fig = _curves(store, g, ds, model, out, skipped)
        if fig is not None:
            figs.append(fig)
    order = [m for m in paper_methods("forgetmenot")]
    variants = [v for m in order for v in dict.fromkeys(d[d["method"] == m]["variant"])]
    varying = varying_columns(d, setting_columns(d))
    d2 = d.assign(line=line_labels(d, varying))
    missing = [method_label(m) for m in ("naive", "ensemble", "kf_i", "kf_inf", "distilled_kf")
               if m not in set(d["method"])]
    fig = draw_bars(d2, "test_acc", out, "forgetmenot_methods", "Forget Me Not: test accuracy per method",
                common_label(d2, varying), order=variants, truncate=True)
    if missing:
        fig.caption += " Not run: " + ", ".join(missing) + "."
    figs.append(fig)
    return figs, skipped


def _curves(store: Store, g: pd.DataFrame, ds: str, model: str, out: Path, skipped: list[Skipped]) -> Figure | None:
    """Validation accuracy and forget fraction per epoch of the naive runs of one (dataset, model): one line per
    setting, the MAX_LINES best by test accuracy (the rest named in the caption); only their logs are read."""
    varying = varying_columns(g, setting_columns(g))
    g = g.assign(line=line_labels(g, varying, fallback=noise_label))
    common = f"{dataset_label(g.iloc[0])}, {model}"
    title = f"Forget Me Not: validation accuracy and forget fraction per epoch ({common})"
    logged = [os.path.isfile(os.path.join(str(r), METRICS)) for r in g["run_dir"]]
    no_log = len(logged) - sum(logged)
    lg = g[logged]
    if lg.empty:
        skipped.append(Skipped(title, f"no naive run has a per-epoch log ({METRICS})"))
        return None
    score = pd.to_numeric(lg["test_acc"], errors="coerce") if "test_acc" in lg else pd.Series(float("nan"),
                                                                                               index=lg.index)
    means = score.groupby(lg["line"], sort=False).mean()
    lines, rest = top_k({ln: means.get(ln, float("nan")) for ln in dict.fromkeys(lg["line"])}, MAX_LINES)
    runs = lg[lg["line"].isin(lines)]
    curves = store.curves(runs["run_id"])
    if curves.empty or "val_acc" not in curves:
        skipped.append(Skipped(title, f"no val_acc in the naive runs' {METRICS}"))
        return None
    have_ff = "forget_fraction" in curves and curves["forget_fraction"].notna().any()
    fig, axes = plt.subplots(1, 2 if have_ff else 1, figsize=(12, 4.5) if have_ff else (7.5, 4.5), squeeze=False)
    colors = color_map(lines)
    for ln in lines:
        r = runs[runs["line"] == ln]
        draw_band(axes[0, 0], r, curves, "val_acc", ln, colors[ln])
        if have_ff:
            draw_band(axes[0, 1], r, curves, "forget_fraction", ln, colors[ln])
    axes[0, 0].set(xlabel="epoch", ylabel=label_metric("val_acc"), title="validation accuracy")
    legend_title = "label noise" if all(c.startswith("config.dataset.noise") for c in varying) else "setting"
    shared = legend_below(fig, axes[0, 0], len(lines), title=legend_title)
    if have_ff:
        axes[0, 1].set(xlabel="epoch", ylabel=label_metric("forget_fraction"),
                       title="forget fraction F_e (correct at e, wrong at the end)")
        if not shared:
            axes[0, 1].legend(loc="best", title=legend_title)
    fig.suptitle(f"Forget Me Not, single model (naive): {common}", fontsize=12)
    note = "" if have_ff else " Forget fraction not logged in these runs' metrics.jsonl."
    if have_ff and "forget_split" in curves:
        splits = curves["forget_split"].dropna().unique()
        note = (f" Forget fraction measured on the {'/'.join(map(str, splits))} split; KF selects from its own "
                "protocol's V (a test half under test_half, this val split under train_holdout: see its "
                "`selected_on` metric)." if len(splits) else "")
    if not have_ff:
        skipped.append(Skipped(f"forget fraction per epoch ({common})",
                               "no forget_fraction in the naive runs' metrics.jsonl"))
    note += rest_note(rest, "settings", "lower naive test accuracy")
    if no_log:
        note += f" {no_log} of {len(g)} naive runs have no per-epoch log ({METRICS}) and are not in the curves."
    return save_figure(fig, out, f"forgetmenot_curves_{slug(ds)}_{slug(model)}", title,
                       f"Naive runs; mean over seeds, band ± 1 std; one line per {legend_title}.{note}",
                       list(runs["run_id"]))


# ----------------------------------------------------------------------------------------------------------------
# KNOW
# ----------------------------------------------------------------------------------------------------------------
