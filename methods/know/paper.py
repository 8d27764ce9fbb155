"""KNOW: Learning from Oblivion: the paper's metadata (card, citation, table rows, published cells, figures)."""

from __future__ import annotations

from pathlib import Path

from bench.paper import Claim, Paper, Side, register_paper

PAPER = register_paper(
    Paper(
        key="know",
        title="KNOW: Learning from Oblivion (Jang, Kim, Kim; arXiv 2508.05059)",
        card="know.md",
        citation="Jang, Kim, Kim. Learning from Oblivion (KNOW prediction). arXiv 2508.05059, CVPR 2026.",
        methods=("naive", "taskvector", "expfit", "know_x2", "know_x4", "know_x8"),
        metrics=("test_acc",),
        intro=(
            "CIFAR-10 top-1 accuracy (%) after fine-tuning from the predicted weights, mean ± sample std over "
            "seeds. Published numbers: card section 7 (ResNet18, CIFAR-100 → CIFAR-10). Δ only for the same "
            "setting."
        ),
        labels={
            "naive": "single (naive)",
            "taskvector": "TaskVector",
            "expfit": "ExpFit",
            "know_x2": "KNOW ×2",
            "know_x4": "KNOW ×4",
            "know_x8": "KNOW ×8",
        },
        aliases={"know_naive": "naive"},
        reference=Path(__file__).with_name("reference.csv"),
        figures="methods.know.figures",
        plan="know/know_cifar.yaml",
        order=2,
        claims=(
            Claim("know_x8_vs_naive", "KNOW ×8 transfers better than fine-tuning from Θ0", Side("know_x8"),
                  Side("know_naive"), source="card §7 (×1 92.40 → ×8 93.55, ResNet18 CIFAR-100 → CIFAR-10)"),
            Claim("know_x2_vs_naive", "KNOW ×2 transfers better than fine-tuning from Θ0", Side("know_x2"),
                  Side("know_naive"), source="card §7"),
            Claim("know_x8_vs_shrink", "KNOW ×8's gain equals a plain shrink of Θ0 (control: weight shrink)",
                  Side("know_x8"), Side("know_shrink"), direction="equal", margin=0.005, control=True,
                  source="control (not in the paper): the official KNOWN's outputs are ~98% parallel to −Θ0"),
            Claim("shrink_vs_naive", "a plain shrink of Θ0 alone beats fine-tuning from Θ0 (control: weight shrink)",
                  Side("know_shrink"), Side("know_naive"), control=True,
                  source="control (not in the paper): where this holds, KNOW's gain may be the shrink's"),
            Claim("know_x8_vs_taskvector", "KNOW ×8 beats TaskVector extrapolation", Side("know_x8"),
                  Side("taskvector"), source="card §7, S ablation (S=2 ~ TaskVector)"),
        ),
    )
)
