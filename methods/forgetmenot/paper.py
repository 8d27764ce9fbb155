"""Forget Me Not: the paper's metadata (card, citation, table rows, published cells, figures)."""

from __future__ import annotations

from pathlib import Path

from bench.paper import Claim, Paper, Side, register_paper

NOISY = {"dataset.noise.kind": ("symmetric", "asymmetric")}

PAPER = register_paper(
    Paper(
        key="forgetmenot",
        title="Forget Me Not (Stern, Corn, Weinshall; arXiv 2507.08686) and its predecessor (AAAI 2025)",
        card="forgetmenot.md",
        citation="Stern, Corn, Weinshall. Forget Me Not: Fighting Local Overfitting with Knowledge Fusion and Distillation. arXiv 2507.08686, 2025.",
        methods=("naive", "ensemble", "kf_i", "kf_inf", "distilled_kf", "evenly_spaced", "horizontal", "averaged_kf", "early_stopping"),
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
            "early_stopping": "early stopping (best-V checkpoint, control)",
        },
        aliases={},
        reference=Path(__file__).with_name("reference.csv"),
        figures="methods.forgetmenot.figures",
        plan="forgetmenot/forgetmenot.yaml",
        order=1,
        claims=(
            Claim("kf_inf_vs_naive", "KF (∞) beats the single model under label noise", Side("kf_inf"), Side("naive"),
                  applies=NOISY, source="card §6, Table II; predecessor's single vs KF (∞) table",
                  regime="local_overfitting"),
            Claim("kf_i_vs_naive", "KF (i) beats the single model under label noise", Side("kf_i"), Side("naive"),
                  applies=NOISY, source="card §2, §6", regime="local_overfitting"),
            Claim("kf_inf_vs_early_stopping", "KF (∞) beats the best-validation checkpoint (control: early stopping)",
                  Side("kf_inf"), Side("early_stopping"), applies=NOISY, control=True,
                  source="control (not in the paper): KF is only interesting where it beats early stopping",
                  regime="local_overfitting"),
            Claim("kf_i_vs_early_stopping", "KF (i) beats the best-validation checkpoint (control: early stopping)",
                  Side("kf_i"), Side("early_stopping"), applies=NOISY, control=True, source="control (not in the paper)",
                  regime="local_overfitting"),
            Claim("distilled_kf_vs_naive", "distilled KF is at least as accurate as the single model",
                  Side("distilled_kf"), Side("naive"), direction="noninferior", applies=NOISY, source="card §3, §6",
                  regime="local_overfitting"),
            Claim("ensemble_vs_naive", "an independent ensemble beats the single model", Side("ensemble"), Side("naive"),
                  source="card §4 (baseline)", regime="local_overfitting"),
            Claim("forget_peak_noise_vs_clean", "the forget fraction peaks higher with label noise than without",
                  Side("naive", {"dataset.noise.kind": ("symmetric", "asymmetric")}),
                  Side("naive", {"dataset.noise.kind": "none"}), metric="forget_fraction_peak",
                  across=("dataset.noise.kind", "dataset.noise.rate"), source="card §1 (forget fraction)"),
        ),
        regimes="methods.forgetmenot.regime",
    )
)
