"""Forget Me Not: the paper's metadata (card, citation, table rows, published cells, figures)."""

from __future__ import annotations

from pathlib import Path

from bench.paper import Paper, register_paper

PAPER = register_paper(
    Paper(
        key="forgetmenot",
        title="Forget Me Not (Stern, Corn, Weinshall; arXiv 2507.08686) and its predecessor (AAAI 2025)",
        card="forgetmenot.md",
        citation="Stern, Corn, Weinshall. Forget Me Not: Fighting Local Overfitting with Knowledge Fusion and Distillation. arXiv 2507.08686, 2025.",
        methods=("naive", "ensemble", "kf_i", "kf_inf", "distilled_kf", "evenly_spaced", "horizontal", "averaged_kf"),
        metrics=("test_acc",),
        intro=(
            "Test accuracy (%) of the Forget Me Not methods, mean ± sample std over seeds (n seeds). "
            "Published numbers: the predecessor's single vs KF (∞) table and Forget Me Not's Table II "
            "(card section 6). Δ = measured − published in accuracy points, only where dataset, model, "
            "noise and data size match the published row; otherwise 'different setting' and the nearest "
            "published row is shown for reference."
        ),
        labels={
            "naive": "single (naive)",
            "ensemble": "independent ensemble",
            "kf_i": "KF (i)",
            "kf_inf": "KF (∞)",
            "distilled_kf": "distilled KF",
            "evenly_spaced": "evenly spaced checkpoints",
            "horizontal": "horizontal ensemble",
            "averaged_kf": "averaged KF (weights)",
        },
        aliases={},
        reference=Path(__file__).with_name("reference.csv"),
        figures="methods.forgetmenot.figures",
    )
)
