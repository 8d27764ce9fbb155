"""Papers as data: each paper package under `methods/` registers one `Paper` (its `paper.py`); the report and the
verdict engine discover papers here, never by spec or method-name patterns."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.plugins import load_plugins
from bench.registry import Registry


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
    return [PAPERS.get(k) for k in PAPERS.registered()]


def paper_of(method: str) -> str | None:
    """The paper whose rows include the registered `method` (aliases first), or None."""
    return next((p.key for p in papers() if p.owns(method)), None)
