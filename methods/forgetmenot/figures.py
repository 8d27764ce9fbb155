"""Forget Me Not figures for the report: forget fraction and validation accuracy per epoch, test accuracy
per method."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from report.plots import (Figure, Skipped, apply_style, color_map, common_label, draw_band, draw_bars, label_metric,
                          parts_label, save_figure, slug)
from report.tables import (Store, dataset_label, method_label, noise_label, paper_methods,
                           setting_columns, varying_columns)


def figures(store: Store, out: Path) -> tuple[list[Figure], list[Skipped]]:
    apply_style()
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
        g = g.assign(line=[parts_label(r, varying) or noise_label(r) for _, r in g.iterrows()])
        have_ff = not curves.empty and "forget_fraction" in curves and \
            curves[curves["run_id"].isin(g["run_id"])]["forget_fraction"].notna().any()
        fig, axes = plt.subplots(1, 2 if have_ff else 1, figsize=(12, 4.5) if have_ff else (7.5, 4.5),
                                 squeeze=False)
        lines = list(dict.fromkeys(g["line"]))
        colors = color_map(lines)
        for ln in lines:
            runs = g[g["line"] == ln]
            draw_band(axes[0, 0], runs, curves, "val_acc", ln, colors[ln])
            if have_ff:
                draw_band(axes[0, 1], runs, curves, "forget_fraction", ln, colors[ln])
        axes[0, 0].set(xlabel="epoch", ylabel=label_metric("val_acc"), title="validation accuracy")
        axes[0, 0].legend(loc="best", title="label noise")
        if have_ff:
            axes[0, 1].set(xlabel="epoch", ylabel=label_metric("forget_fraction"),
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
        figs.append(save_figure(fig, out, f"forgetmenot_curves_{slug(ds)}_{slug(model)}",
                          f"Forget Me Not: validation accuracy and forget fraction per epoch ({common})",
                          f"Naive runs; mean over seeds, band ± 1 std; one line per label-noise level.{note}",
                          list(g["run_id"])))
    order = [m for m in paper_methods("forgetmenot")]
    variants = [v for m in order for v in dict.fromkeys(d[d["method"] == m]["variant"])]
    varying = varying_columns(d, setting_columns(d))
    d2 = d.assign(line=[parts_label(r, varying) for _, r in d.iterrows()])
    missing = [method_label(m) for m in ("naive", "ensemble", "kf_i", "kf_inf", "distilled_kf")
               if m not in set(d["method"])]
    fig = draw_bars(d2, "test_acc", out, "forgetmenot_methods", "Forget Me Not: test accuracy per method",
                common_label(d2, varying), order=variants, truncate=True)
    if missing:
        fig.caption += " Not run: " + ", ".join(missing) + "."
    figs.append(fig)
    return figs, skipped


# ----------------------------------------------------------------------------------------------------------------
# KNOW
# ----------------------------------------------------------------------------------------------------------------
