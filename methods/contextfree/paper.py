"""Context-free synthetic data mitigates forgetting: the paper's metadata (card, citation, table rows, published cells, figures)."""

from __future__ import annotations

from pathlib import Path

from bench.paper import Claim, Paper, Side, register_paper

PAPER = register_paper(
    Paper(
        key="contextfree",
        title="Context-free synthetic data mitigates forgetting (Bansal, Sanghavi; arXiv 2505.13811)",
        card="contextfree.md",
        citation="Bansal, Sanghavi. Context-Free Synthetic Data Mitigates Forgetting. arXiv 2505.13811, 2025.",
        methods=("plain_ft", "cf_replay", "contextual_replay", "real_replay", "kl_cf", "l2", "wise_ft"),
        metrics=("forgetting_bpc", "task_em"),
        intro=(
            "Forgetting = increase of corpus-A bits per character (lower is better) and task exact match "
            "(%), mean ± sample std over seeds. The paper's numbers are not retrievable: it is compared by "
            "its qualitative claim 'CF < contextual, replay in forgetting'."
        ),
        labels={
            "plain_ft": "plain fine-tuning",
            "cf_replay": "context-free replay",
            "contextual_replay": "contextual replay",
            "real_replay": "real-data replay",
            "kl_cf": "KL on context-free",
            "l2": "L2 to θ*",
            "wise_ft": "WiSE-FT",
        },
        aliases={},
        reference=Path(__file__).with_name("reference.csv"),
        figures="methods.contextfree.figures",
        plan="contextfree/contextfree.yaml",
        order=3,
        claims=(
            Claim("cf_vs_plain", "context-free replay forgets less than plain fine-tuning", Side("cf_replay"),
                  Side("plain_ft"), metric="forgetting_bpc", direction="less", source="card (abstract)"),
            Claim("cf_vs_contextual", "context-free replay forgets less than contextual replay", Side("cf_replay"),
                  Side("contextual_replay"), metric="forgetting_bpc", direction="less", source="card (abstract)"),
            Claim("contextual_vs_plain", "contextual replay forgets less than plain fine-tuning",
                  Side("contextual_replay"), Side("plain_ft"), metric="forgetting_bpc", direction="less",
                  source="card (abstract)"),
            Claim("kl_cf_vs_plain", "KL on context-free samples forgets less than plain fine-tuning",
                  Side("kl_cf"), Side("plain_ft"), metric="forgetting_bpc", direction="less", source="card"),
        ),
    )
)
