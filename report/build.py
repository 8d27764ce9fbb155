"""`forgetbench report RESULTS --out DIR`: tables (Markdown, LaTeX, CSV), figures (PNG, PDF), index.md/.html.

Layout of DIR: index.md, index.html (self-contained), tables/<paper>.{md,tex,csv} (every row: measured mean ± std
over seeds, n, published value with its source, difference), tables/<paper>_layout_*.{md,tex,csv} (the paper's
own table layout), tables/<paper>_provenance.{md,csv}, tables/generic_<spec>.*, figures/*.{png,pdf}.
"""
from __future__ import annotations

import importlib
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from bench.paper import papers
from bench.store import METRICS
from report.verdicts import load_runs, verdict_frame, verdicts

from report import plots
from report.html import Section, Table, write_html, write_markdown
from report.tables import (code_version_note, csv_frame, display_frame, generic_table, load_reference,
                           load_store, paper_tables, to_markdown, write_table)

# columns of the store's runs that the verdict engine never reads (provenance, the report's own keys)
REPORT_ONLY = ("device.", "versions.", "started_at", "finished_at", "git_dirty", "git_diff_hash", "code_version",
               "setting_key", "variant", "paper", "data_note", "device_str", "method_name")
MAX_FAILED = 50  # failed runs named one by one in the report (the rest counted)


def _capped(lines: list[str], what: str, total: int | None = None, limit: int = 25) -> list[str]:
    total = len(lines) if total is None else total
    return lines[:limit] + ([f"… and {total - limit} more {what}"] if total > limit else [])


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")[:50]


def _provenance(long: pd.DataFrame) -> pd.DataFrame:
    if long.empty or "run_ids" not in long:
        return pd.DataFrame()
    p = long[long["run_ids"].astype(str) != ""].drop_duplicates(["setting", "variant"])
    cols = {"setting": "setting", "method_label": "method", "data": "data", "specs": "spec", "seeds": "seeds",
            "run_ids": "run ids", "git_sha": "git sha", "code_version": "code version", "device": "device"}
    return p[[c for c in cols if c in p]].rename(columns=cols)


def verdict_section(results_dir: Path, tdir: Path, runs: pd.DataFrame | None = None) -> Section:
    """The report's first section: one verdict table per paper (claim, setting, n, effect ± CI, verdict, regime).
    `runs`: the store's runs when already loaded (`load_runs` rows), else read from `results_dir`."""
    table = verdict_frame(verdicts(load_runs(results_dir) if runs is None else runs))
    sec = Section("Verdicts: did each paper's claims reproduce here?", "verdicts",
                  intro=["Each claim is a paired comparison over seeds on the same test examples: effect = mean of "
                         "a − b in the claim's metric (accuracy differences in points), 95 % Student-t CI. "
                         "supported / contradicted: the CI lies on one side of the margin; inconclusive: it spans "
                         "it (or n = 1); not run: no seed has both sides. Controls (early stopping for KF, weight "
                         "shrink for KNOW) sit beside the claims they could explain away."])
    for paper, t in (table.groupby("paper", sort=False) if not table.empty else []):
        shown = t.drop(columns=["paper"])
        sec.tables.append(Table(f"{paper}: verdicts", shown,
                                write_table(shown, tdir, f"verdicts_{paper}", caption=f"{paper}: verdicts")))
    return sec


def build_report(results_dir: Path, out_dir: Path) -> Path:
    """Read the store under `results_dir`, write the report into `out_dir`; returns the path of index.html."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    tdir, fdir = out_dir / "tables", out_dir / "figures"
    for d in (tdir, fdir):
        d.mkdir(parents=True, exist_ok=True)
        for old in d.iterdir():  # a rebuild must not keep figures of runs that are gone
            if old.is_file() and old.suffix in {".png", ".pdf", ".md", ".tex", ".csv"}:
                old.unlink()
    store = load_store(results_dir)
    header = _header(results_dir, store)
    sections = [verdict_section(results_dir, tdir, _verdict_rows(store.runs))]
    ref = load_reference()
    sections += [paper_section(store, paper, ref, tdir, fdir) for paper in papers()]
    sections.append(generic_section(store, tdir, fdir))
    write_markdown(sections, header, out_dir)
    path = write_html(sections, header, out_dir)
    print(f"report: {path.resolve()} (and {out_dir / 'index.md'}; tables in {tdir}, figures in {fdir})")
    return path


def _header(results_dir: Path, store) -> list[str]:
    runs = store.runs
    n_done = int((runs["status"] == "done").sum()) if not runs.empty else 0
    n_failed = int((runs["status"] != "done").sum()) if not runs.empty else 0
    shas = sorted(set(runs["git_sha"].astype(str))) if not runs.empty else []
    return [f"Results store: {results_dir.resolve()}",
            f"Generated: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
            f"Runs: {n_done} done, {n_failed} failed; specs: {', '.join(sorted(store.sweeps)) or 'none'}",
            f"Git sha of the runs: {', '.join(shas) or 'n/a'}",
            "Units: accuracies in %, Δ = measured − published in accuracy points; ± = sample std over seeds "
            "(ddof=1); n = number of seeds. 'not run' = no finished run in the store.",
            f"Code versions of the finished runs: {code_version_note(store.done) or 'n/a'}"]


def _verdict_rows(runs: pd.DataFrame) -> pd.DataFrame | None:
    """The store's rows as the verdict engine reads them: registered method names (the store's `method` is the
    paper's row), report-only columns dropped, text columns as one object block (its row selection is ~2x faster)."""
    if runs.empty:
        return None
    vruns = runs.assign(method=runs["method_name"])
    vruns = vruns.drop(columns=[c for c in vruns.columns if c.startswith(REPORT_ONLY)])
    return vruns.astype({c: object for c in vruns.columns if isinstance(vruns[c].dtype, pd.StringDtype)})


def paper_section(store, paper, ref: pd.DataFrame, tdir: Path, fdir: Path) -> Section:
    """One paper: its layouts, all rows measured vs published, provenance and its own figures."""
    pt = paper_tables(store, paper, ref)
    sec = Section(paper.title, paper.key, intro=[paper.intro], notes=pt.notes, claims=pt.claims)
    disp = display_frame(pt.long, paper)
    files = write_table(disp, tdir, paper.key, csv_frame=csv_frame(pt.long, paper),
                        caption=f"{paper.title}: measured vs published")
    for i, (name, grid) in enumerate(pt.layouts.items(), 1):
        stem = f"{paper.key}_layout_{i}"
        sec.tables.append(Table(f"Paper layout: {name}", grid, write_table(grid, tdir, stem, caption=name)))
    pruns = store.done[store.done["paper"] == paper.key] if not store.done.empty else store.done
    vnote = code_version_note(pruns)
    for t in sec.tables:
        t.note = vnote
    sec.tables.append(Table("All rows: measured vs published, with sources", disp, files, note=vnote))
    prov = _provenance(pt.long)
    if not prov.empty:
        (tdir / f"{paper.key}_provenance.md").write_text(to_markdown(prov) + "\n")
        prov.to_csv(tdir / f"{paper.key}_provenance.csv", index=False)
        sec.provenance = Table("Provenance (spec, run ids, git sha, device)", prov,
                               {"md": tdir / f"{paper.key}_provenance.md",
                                "csv": tdir / f"{paper.key}_provenance.csv"})
    if paper.figures:
        sec.figures, sec.skipped = importlib.import_module(paper.figures).figures(store, fdir)
    return sec


def generic_section(store, tdir: Path, fdir: Path) -> Section:
    """Every spec in the store, whatever the paper: a table and two figures per spec, data notes, failures."""
    gsec = Section("All sweeps (generic)", "generic",
                   intro=["Every spec in the store, whatever the paper: mean ± sample std over seeds per method "
                          "and setting, test accuracy per method, and validation accuracy per epoch."])
    done = store.done
    for spec in sorted(set(done["spec"])) if not done.empty else []:
        d = done[done["spec"] == spec]
        g = generic_table(d)
        shown = g[[c for c in g.columns if not c.endswith(("_mean", "_std"))]]
        stem = f"generic_{_slug(spec)}"
        files = write_table(shown, tdir, stem, csv_frame=g, caption=f"{spec}: all methods")
        sweep = store.sweeps.get(spec, {})
        desc = (sweep.get("spec") or {}).get("description", "")
        gsec.tables.append(Table(f"{spec}{': ' + desc if desc else ''}", shown, files, note=code_version_note(d)))
        gsec.notes += _data_notes(spec, d)
    gsec.figures, gsec.skipped = plots.generic_figures(store, fdir)
    runs = store.runs
    failed = runs[runs["status"] != "done"] if not runs.empty else runs
    if not failed.empty:
        gsec.notes += _capped([f"FAILED {r['spec']}/{r['run_id']} ({r['method']}, seed {r['seed']}): "
                               f"{r.get('reason')}" for r in failed.head(MAX_FAILED + 1).to_dict("records")],
                              "failed runs (see `forgetbench status`)", total=len(failed), limit=MAX_FAILED)
    return gsec


def _data_notes(spec: str, d: pd.DataFrame) -> list[str]:
    """Data / device / git combinations of one spec's finished runs, and how many lack a per-epoch log."""
    cols = ["data_note", "dataset", "n_train", "n_val", "n_test", "device_str", "git_sha"]
    u = d[[c for c in cols if c in d]].drop_duplicates()
    u = u[u["n_train"].notna()] if "n_train" in u else u.iloc[0:0]
    notes = sorted({f"{spec}: {r['data_note']} ({r['dataset']}): {int(r['n_train'])} train, {int(r['n_val'])} "
                    f"val, {int(r['n_test'])} test; devices {r['device_str']}; git {r['git_sha']}"
                    for r in u.to_dict("records")})
    out = _capped(notes, f"{spec}: data/device/git combinations")
    no_log = sum(not os.path.isfile(os.path.join(str(rd), METRICS)) for rd in d["run_dir"])
    if no_log:
        out.append(f"{spec}: {no_log} of {len(d)} finished runs have no per-epoch log ({METRICS}): "
                   "their final numbers are in the tables, they are not in the per-epoch curves")
    return out
