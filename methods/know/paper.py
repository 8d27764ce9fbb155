"""KNOW: Learning from Oblivion: the paper's metadata (card, citation, table rows, published cells, figures)."""

from __future__ import annotations

from pathlib import Path

from bench.paper import Paper, register_paper

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
    )
)
