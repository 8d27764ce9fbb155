"""Papers as data: each paper package under `methods/` registers one `Paper` (its `paper.py`); the report and the
verdict engine discover papers here, never by spec or method-name patterns."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.plugins import load_plugins
from bench.registry import Registry


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a registered method, optionally in a narrower setting (dotted run-config paths,
    e.g. {"dataset.noise.kind": "none"}) when the claim compares settings rather than methods."""
    method: str
    where: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """A paper's claim as a paired comparison: per seed, d = metric(a) - metric(b) on the same examples.

    direction 'greater': supported when the CI of mean d lies above +margin, contradicted when below -margin;
    'less' mirrors it; 'equal' (a control: "b explains a away"): supported when the CI lies inside ±margin,
    contradicted when it lies outside. `applies` restricts the settings (run-config path -> allowed values)."""
    key: str
    text: str
    a: Side
    b: Side
    metric: str = "test_acc"
    direction: Literal["greater", "less", "equal"] = "greater"
    margin: float = 0.0                         # in the metric's own units (accuracy as a fraction)
    applies: dict[str, tuple] = field(default_factory=dict)
    across: tuple[str, ...] = ()                # run-config paths a and b differ in (not paired on), e.g. noise
    source: str = ""                            # card section / table
    control: bool = False                       # a control that could explain another claim away
    regime: str | None = None                   # name of a regime diagnostic of the paper (see Paper.regimes)


@dataclass(frozen=True)
class Paper:
    """One reproduced paper: the rows and metrics of its tables, its published numbers and where to find them."""
    key: str                                   # short name, e.g. "forgetmenot"; file stems of the report
    title: str                                 # with authors and arXiv id
    card: str                                  # the card under ../shared/papers (facts, formulas, numbers)
    citation: str                              # one line
    methods: tuple[str, ...]                   # the paper's rows, in its order (after `aliases`)
    metrics: tuple[str, ...]                   # first = the headline metric
    intro: str = ""                            # the report section's first paragraph
    labels: dict[str, str] = field(default_factory=dict)    # method -> how the paper names it
    aliases: dict[str, str] = field(default_factory=dict)   # registered name -> the paper's row (know_naive -> naive)
    reference: Path | None = None              # CSV of published cells (see report.tables.load_reference)
    figures: str | None = None                 # module with `figures(store, out) -> (figures, skipped)`
    claims: tuple[Claim, ...] = ()             # what the paper says, as comparisons the verdict engine judges
    regimes: str | None = None                 # module with `regime(name, runs) -> str` (diagnostics per setting)
    order: int = 100                           # position in the report
    plan: str | None = None                    # the sweep (path under sweeps/) of the paper's published grid

    def owns(self, method: str) -> bool:
        """Whether the registered `method` fills one of this paper's rows (a row reached through an alias is
        filled by the alias only: KNOW's `naive` row is `know_naive`, not Forget Me Not's `naive`)."""
        return method in self.aliases or (method in self.methods and method not in self.aliases.values())


PAPERS: Registry[Paper] = Registry("paper")


def register_paper(paper: Paper) -> Paper:
    PAPERS.register(paper.key)(paper)
    return paper


def papers() -> list[Paper]:
    """Every registered paper (the paper packages are imported first), in registration order."""
    load_plugins()
    return sorted((PAPERS.get(k) for k in PAPERS.registered()), key=lambda p: (p.order, p.key))


def paper_of(method: str) -> str | None:
    """The paper whose rows include the registered `method` (aliases first), or None."""
    return next((p.key for p in papers() if p.owns(method)), None)
