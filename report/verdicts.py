"""The verdict engine: each registered paper's claims judged on the results store by paired differences over seeds.

For a claim `a − b (direction) margin` and each setting (every run-config field except the seed, the spec, the
device and the method's own parameters), the runs of `a` and `b` are paired by seed; d_s = metric(a, s) −
metric(b, s), scored on the same examples (when both record per-split test accuracies of the test-half protocol,
on their common halves). The effect is mean(d) with a 95 % confidence interval (Student t; a seeded percentile
bootstrap as an option), and the verdict is:

- supported      the CI lies on the claim's side of the margin (for `equal`: inside ±margin);
- contradicted   the CI lies on the other side (a tie, d = 0 on every seed, contradicts "a > b");
- inconclusive   the CI spans the margin, or n = 1 (no CI can be formed: said so);
- not run        no seed has both sides finished (missing and failed runs are counted).
"""
from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bench.paper import Claim, Paper, papers
from bench.results import load_results
from report.tables import PERCENT_METRICS

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_RUN = "supported", "contradicted", "inconclusive", "not run"
# config columns that never define a setting: which spec, which seed, where, and the method itself
NOT_SETTING = ("config.spec", "seed", "config.device", "method")


@dataclass
class Verdict:
    paper: str
    claim: Claim
    setting: str                       # "dataset=…, model=…, noise=…" (what differs between settings)
    n: int                             # seeds with both sides finished
    mean: float = float("nan")        # mean paired difference, metric units
    lo: float = float("nan")          # 95 % CI
    hi: float = float("nan")
    verdict: str = NOT_RUN
    note: str = ""                    # missing / failed seeds, n = 1, examples used
    regime: str = ""                  # regime diagnostic of the setting, where the paper has one
    diffs: list[float] = field(default_factory=list)

    def effect_str(self, scale: float) -> str:
        if self.n == 0:
            return "—"
        if self.n == 1 or math.isnan(self.lo):
            return f"{self.mean * scale:+.2f} (n = 1: no CI)"
        return f"{self.mean * scale:+.2f} [{self.lo * scale:+.2f}, {self.hi * scale:+.2f}]"


def confidence_interval(d: np.ndarray, *, method: str = "t", level: float = 0.95, n_boot: int = 10_000,
                        seed: int = 0) -> tuple[float, float]:
    """CI of the mean of `d`: Student t (small n), or a seeded percentile bootstrap. NaNs for n < 2."""
    d = np.asarray(d, dtype=np.float64)
    if d.size < 2:
        return float("nan"), float("nan")
    m = float(d.mean())
    if method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
        return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))
    half = float(stats.t.ppf((1 + level) / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return m - half, m + half


def decide(claim: Claim, n: int, lo: float, hi: float) -> str:
    """The verdict of a claim from its CI (see the module docstring)."""
    if n == 0:
        return NOT_RUN
    if n == 1 or math.isnan(lo):
        return INCONCLUSIVE
    m = claim.margin
    if claim.direction == "greater":
        return SUPPORTED if lo > m else CONTRADICTED if hi <= m else INCONCLUSIVE
    if claim.direction == "less":
        return SUPPORTED if hi < -m else CONTRADICTED if lo >= -m else INCONCLUSIVE
    if claim.direction == "noninferior":
        return SUPPORTED if lo > -m else CONTRADICTED if hi < -m else INCONCLUSIVE
    # equal: a control that explains the other claim away when the difference stays within ±margin
    return SUPPORTED if -m <= lo and hi <= m else CONTRADICTED if lo > m or hi < -m else INCONCLUSIVE


def _col(path: str) -> str:
    return {"dataset.name": "dataset", "model.name": "model", "method.name": "method", "seed": "seed"}.get(
        path, f"config.{path}")


def _matches(df: pd.DataFrame, where: dict[str, Any]) -> pd.Series:
    ok = pd.Series(True, index=df.index)
    for path, allowed in where.items():
        col = _col(path)
        vals = allowed if isinstance(allowed, (list, tuple, set)) else [allowed]
        ok &= df[col].isin(list(vals)) if col in df else False
    return ok


def _splits(v: Any) -> list[float] | None:
    if isinstance(v, str) and v.startswith("["):
        v = json.loads(v)
    return [float(x) for x in v] if isinstance(v, list) and v else None


def _scored_on(r: pd.Series) -> str:
    """Which test examples `test_acc` of a run is scored on: 'halves' (the test-half protocol), else 'full'."""
    return "halves" if r.get("protocol") == "test_half" else "full"


def paired_values(a: pd.Series, b: pd.Series, metric: str) -> tuple[float, float, str]:
    """metric(a), metric(b) on the same examples. A test accuracy scored on the test-half protocol's evaluation
    halves is compared with the other side's accuracy on the same halves (naive and the ensemble record theirs
    as `test_acc_splits`), on the halves both have; otherwise both full-test accuracies. Returns (a, b, which)."""
    if metric != "test_acc":
        return float(a[metric]), float(b[metric]), ""
    if _scored_on(a) == _scored_on(b) == "full":
        return float(a[metric]), float(b[metric]), "full test set"
    sa, sb = _splits(a.get("test_acc_splits")), _splits(b.get("test_acc_splits"))
    if sa and sb and _has_halves(a) and _has_halves(b):
        k = min(len(sa), len(sb))
        return float(np.mean(sa[:k])), float(np.mean(sb[:k])), f"test halves 1-{k}"
    return float(a[metric]), float(b[metric]), "different test examples"


def _has_halves(r: pd.Series) -> bool:
    return r.get("protocol") == "test_half" or r.get("protocol_halves") == "test_half"


def judge(paper: Paper, claim: Claim, runs: pd.DataFrame, *, ci: str = "t", regime=None) -> list[Verdict]:
    """Every setting's verdict of `claim` on the runs of a store (load_results rows)."""
    if runs.empty or "method" not in runs:
        return [Verdict(paper.key, claim, "—", 0, note="no runs in the store")]
    sel = _matches(runs, claim.applies)
    sides = {}
    for name, side in (("a", claim.a), ("b", claim.b)):
        sides[name] = runs[sel & (runs["method"] == side.method) & _matches(runs, side.where)]
    if sides["a"].empty or sides["b"].empty:
        missing = [s.method + (f" ({', '.join(f'{k}={v}' for k, v in s.where.items())})" if s.where else "")
                   for s, n in ((claim.a, "a"), (claim.b, "b")) if sides[n].empty]
        return [Verdict(paper.key, claim, "—", 0, note=f"no runs of {', '.join(missing)}")]
    both = pd.concat(sides.values())
    keys = setting_keys(sides["a"], sides["b"])
    across = {_col(p) for p in claim.across}
    varying = [c for c in keys if _text(both[c]).nunique() > 1]
    own = {n: _own_params(sides[n], keys) for n in ("a", "b")}
    out = []
    a_side = sides["a"].assign(**{f"_k{i}": _text(sides["a"][c]) for i, c in enumerate(keys)})
    b_keys = [c for c in keys if c not in across]
    b_groups = {}  # the b runs of each setting, found once (not one scan of every b column per setting)
    if b_keys:
        b_text = sides["b"].assign(**{f"_k{i}": _text(sides["b"][c]) for i, c in enumerate(b_keys)})
        for k, g in b_text.groupby([f"_k{i}" for i in range(len(b_keys))], sort=False):
            b_groups[k if isinstance(k, tuple) else (k,)] = g.drop(columns=[f"_k{i}" for i in range(len(b_keys))])
    for skey, a_rows in a_side.groupby([f"_k{i}" for i in range(len(keys))], sort=False):
        skey = skey if isinstance(skey, tuple) else (skey,)
        want = tuple(v for c, v in zip(keys, skey) if c not in across)
        b_rows = b_groups.get(want, sides["b"].iloc[0:0]) if b_keys else sides["b"]
        label = ", ".join(f"{c.removeprefix('config.')}={v}" for c, v in zip(keys, skey) if c in varying) or \
            ", ".join(f"{c}={v}" for c, v in zip(keys, skey) if c in ("dataset", "model"))
        for a_label, a_var in _variants(a_rows, own["a"]):          # e.g. KF's window, know_shrink's factor
            for b_label, b_var in _variants(b_rows, own["b"]):
                lab = "; ".join(x for x in (label, a_label and f"{claim.a.method} {a_label}",
                                            b_label and f"{claim.b.method} {b_label}") if x)
                out.append(_verdict(paper, claim, lab, a_var, b_var, ci, regime))
    return out


def _own_params(side: pd.DataFrame, keys: list[str]) -> list[str]:
    """Method parameters of one side that vary across its runs and are not part of the setting (its variants)."""
    return [c for c in side.columns if c.startswith("config.method.") and c not in keys
            and side[c].notna().any() and _text(side[c]).nunique() > 1]


def _variants(rows: pd.DataFrame, own: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per combination of the side's own varying parameters; one unlabelled group without any."""
    if not own or rows.empty:
        return [("", rows)]
    text = rows.assign(**{f"_v{i}": _text(rows[c]) for i, c in enumerate(own)})
    out = []
    for vals, g in text.groupby([f"_v{i}" for i in range(len(own))], sort=False):
        vals = vals if isinstance(vals, tuple) else (vals,)
        out.append((", ".join(f"{c.rsplit('.', 1)[-1]}={v}" for c, v in zip(own, vals)),
                    g.drop(columns=[f"_v{i}" for i in range(len(own))])))
    return out


def _text(col: pd.Series) -> pd.Series:
    """Values as comparable strings, missing ones as '' (pandas' str dtype keeps NaN, and groupby drops it)."""
    def text(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return format(v, ".12g") if isinstance(v, float) else str(v)   # 1.0 (a column with gaps) reads as 1
    return col.map(text).astype(object)


def setting_keys(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """The columns that define a setting: every run-config field but seed, spec, device and the method, plus
    the method parameters both sides have (e.g. KNOW's trajectory, KF's and early stopping's protocol)."""
    cols = [c for c in a.columns if (c.startswith("config.") or c in ("dataset", "model")) and c not in NOT_SETTING]
    out = []
    for c in cols:
        if c.startswith("config.method."):
            if c in b and a[c].notna().any() and b[c].notna().any():
                out.append(c)
        else:
            out.append(c)
    return out


def _verdict(paper: Paper, claim: Claim, label: str, a_rows: pd.DataFrame, b_rows: pd.DataFrame, ci: str,
             regime) -> Verdict:
    done = {n: r[r["status"] == "done"].drop_duplicates("seed").set_index("seed") for n, r in
            (("a", a_rows), ("b", b_rows))}
    failed = {n: sorted(r[r["status"] != "done"]["seed"].tolist()) for n, r in (("a", a_rows), ("b", b_rows))}
    seeds = sorted(set(done["a"].index) & set(done["b"].index))
    diffs, examples = [], set()
    for s in seeds:
        ra, rb = done["a"].loc[s], done["b"].loc[s]
        if claim.metric not in ra or pd.isna(ra.get(claim.metric)) or pd.isna(rb.get(claim.metric)):
            continue
        va, vb, ex = paired_values(ra, rb, claim.metric)
        diffs.append(va - vb)
        examples.add(ex)
    d = np.asarray(diffs)
    lo, hi = confidence_interval(d, method=ci) if d.size else (float("nan"), float("nan"))
    notes = []
    for n, other, side in (("a", "b", claim.a), ("b", "a", claim.b)):
        if failed[n]:
            notes.append(f"{side.method}: {len(failed[n])} failed (seed {', '.join(map(str, failed[n]))})")
        missing = sorted(set(done[other].index) - set(done[n].index) - set(failed[n]))
        if missing:
            notes.append(f"{side.method}: seed {', '.join(map(str, missing))} missing")
    if d.size == 1:
        notes.append("n = 1: no CI")
    if examples - {""}:
        notes.append("scored on " + " / ".join(sorted(examples - {""})))
    v = Verdict(paper.key, claim, label, int(d.size), float(d.mean()) if d.size else float("nan"), lo, hi,
                decide(claim, int(d.size), lo, hi), "; ".join(notes), diffs=[float(x) for x in d])
    if regime is not None and claim.regime:
        v.regime = regime(claim.regime, pd.concat([a_rows, b_rows]))
    return v


def verdicts(runs: pd.DataFrame, *, ci: str = "t") -> list[Verdict]:
    """Every claim of every registered paper, judged on `runs`."""
    out = []
    for p in papers():
        regime = importlib.import_module(p.regimes).regime if p.regimes else None
        for c in p.claims:
            out.extend(judge(p, c, runs, ci=ci, regime=regime))
    return out


def load_runs(root: str | Path) -> pd.DataFrame:
    """The store's runs with `run_dir` (regime diagnostics read the per-epoch logs there)."""
    df = load_results(root)
    if not df.empty:
        dirs = {(p.parent.parent.name, p.parent.name): str(p.parent) for p in Path(root).glob("**/result.json")}
        df["run_dir"] = [dirs.get((s, r), "") for s, r in zip(df["spec"], df["run_id"])]
    return df


def _side(s) -> str:
    where = ", ".join(f"{k.split('.')[-1]}={'|'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                      for k, v in s.where.items())
    return f"{s.method}[{where}]" if where else s.method


def verdict_frame(vs: list[Verdict]) -> pd.DataFrame:
    """One row per (claim, setting): the verdict table the report and `forgetbench verdicts` print."""
    rows = []
    for v in vs:
        c = v.claim
        scale = 100.0 if c.metric in PERCENT_METRICS else 1.0
        unit = " (points)" if scale == 100.0 else ""
        op = {"greater": ">", "less": "<", "noninferior": "≥", "equal": "≈"}[c.direction]
        rows.append({"paper": v.paper, "claim": f"{_side(c.a)} − {_side(c.b)} {op} "
                     f"{'±' if c.direction == 'equal' else ''}{c.margin * scale:g}" + (" [control]" if c.control else ""),
                     "metric": c.metric + unit, "setting": v.setting, "n": v.n, "effect [95% CI]": v.effect_str(scale),
                     "verdict": v.verdict, "regime": v.regime, "note": v.note, "source": c.source})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- the CI gate
def supported_verdicts(root: str | Path) -> list[dict[str, str]]:
    """The supported (claim, setting) pairs of a store: what `forgetbench check --update-targets` pins."""
    return [{"paper": v.paper, "claim": v.claim.key, "setting": v.setting, "verdict": v.verdict}
            for v in verdicts(load_runs(root)) if v.verdict == SUPPORTED]


def check_verdicts(root: str | Path, pinned: Any) -> list[str]:
    """A failure message for every pinned `supported` verdict that is no longer supported on this store."""
    if not isinstance(pinned, list):
        return [f"targets' verdicts: got {type(pinned).__name__}; allowed: a list of {{paper, claim, setting, "
                "verdict}} mappings (written by --update-targets)"]
    now = {(v.paper, v.claim.key, v.setting): v for v in verdicts(load_runs(root))}
    out = []
    for p in pinned:
        if not isinstance(p, dict) or p.get("verdict") != SUPPORTED:
            continue
        v = now.get((p.get("paper"), p.get("claim"), p.get("setting")))
        if v is None:
            out.append(f"{p.get('paper')} claim {p.get('claim')} ({p.get('setting')}): supported in the targets, "
                       "not judged now (setting or claim gone)")
        elif v.verdict != SUPPORTED:
            scale = 100.0 if v.claim.metric in PERCENT_METRICS else 1.0
            out.append(f"{v.paper} claim {v.claim.key} ({v.setting}): supported in the targets, now {v.verdict}: "
                       f"effect {v.effect_str(scale)} over n = {v.n}")
    return out
