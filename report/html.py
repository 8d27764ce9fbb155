"""index.md and a self-contained index.html (figures embedded as base64 data URIs) for the report."""
from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from report.plots import Figure, Skipped
from report.tables import DIFFERENT, NOT_RUN, to_markdown


@dataclass
class Table:
    title: str
    frame: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)     # md / tex / csv
    note: str = ""                                             # one line under the title (e.g. code versions)


@dataclass
class Section:
    title: str
    anchor: str
    intro: list[str] = field(default_factory=list)             # paragraphs (plain text)
    notes: list[str] = field(default_factory=list)             # bullet points: data and setting differences
    claims: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    provenance: Table | None = None


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


MAX_INDEX_ROWS = 300  # rows of a table shown in index.md / index.html; the full table is in its files


def _shown(t: Table) -> tuple[pd.DataFrame, str]:
    """The rows of `t` the index shows, and a note when some are left to the table's files."""
    if len(t.frame) <= MAX_INDEX_ROWS:
        return t.frame, ""
    files = ", ".join(Path(p).name for p in t.files.values()) or "the table's files"
    return t.frame.head(MAX_INDEX_ROWS), (f"First {MAX_INDEX_ROWS} of {len(t.frame):,} rows; all of them in "
                                          f"{files}.")


def _markdown(t: Table) -> str:
    """The table's Markdown: the .md file already written for it when it is shown whole (rendered once)."""
    frame, _ = _shown(t)
    md = t.files.get("md")
    if md is not None and Path(md).is_file() and len(frame) == len(t.frame):
        return Path(md).read_text().rstrip("\n")
    return to_markdown(frame)


def write_markdown(sections: list[Section], header: list[str], out_dir: Path) -> Path:
    lines = ["# forgetbench report", ""] + [f"{h}  " for h in header] + [""]
    lines += ["## Contents", ""] + [f"- [{s.title}](#{s.anchor})" for s in sections] + [""]
    for s in sections:
        lines += [f"<a id=\"{s.anchor}\"></a>", f"## {s.title}", ""]
        lines += [p + "\n" for p in s.intro]
        if s.notes:
            lines += ["**Data and setting**", ""] + [f"- {n}" for n in s.notes] + [""]
        if s.claims:
            lines += ["**Claims checked**", ""] + [f"- {c}" for c in s.claims] + [""]
        for f in s.figures:
            lines += [f"### {f.title}", "", f"![{f.title}]({_rel(f.png, out_dir)})", "",
                      f"{f.caption} [PNG]({_rel(f.png, out_dir)}) · [PDF]({_rel(f.pdf, out_dir)})", ""]
        for k in s.skipped:
            lines += [f"- *Figure skipped*: {k.title}: {k.reason}."]
        if s.skipped:
            lines.append("")
        for t in s.tables:
            links = " · ".join(f"[{k.upper()}]({_rel(p, out_dir)})" for k, p in t.files.items())
            lines += [f"### {t.title}", "", links, ""] + ([f"*{t.note}*", ""] if t.note else [])
            lines += [_markdown(t) if not t.frame.empty else "(empty)", ""]
            if _shown(t)[1]:
                lines += [f"*{_shown(t)[1]}*", ""]
        if s.provenance is not None and not s.provenance.frame.empty:
            links = " · ".join(f"[{k.upper()}]({_rel(p, out_dir)})" for k, p in s.provenance.files.items())
            lines += [f"### {s.provenance.title}", "", links, "", _markdown(s.provenance), ""]
            if _shown(s.provenance)[1]:
                lines += [f"*{_shown(s.provenance)[1]}*", ""]
    path = out_dir / "index.md"
    path.write_text("\n".join(lines) + "\n")
    return path


CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:2.2em}h3{margin-top:1.6em}
table{border-collapse:collapse;font-size:13px;margin:.6em 0;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}th{background:#eee}
tr:nth-child(even) td{background:#fafafa}td.nr{color:#999;font-style:italic}td.ds{color:#a05a00}
figure{margin:1em 0;border:1px solid #ddd;padding:.6em;background:#fff}
figure img{max-width:100%;max-height:620px;width:auto;height:auto}
figcaption{font-size:13px;color:#444}.links a{margin-right:.8em;font-size:13px}.skip{color:#a05a00}
.header{font-size:14px;color:#333}p.note{font-size:13px;color:#555}p.warn{font-size:13px;color:#b00;font-weight:bold}
"""


def _table_html(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>(empty)</em></p>"
    e = html.escape
    cls = {NOT_RUN: ' class="nr"', DIFFERENT: ' class="ds"'}
    rows = ["<tr>" + "".join(f"<td{cls.get(v, '')}>{e(v)}</td>" for v in map(str, row)) + "</tr>"
            for row in df.itertuples(index=False, name=None)]
    head = "".join(f"<th>{e(str(c))}</th>" for c in df.columns)
    return (f'<table class="dataframe">\n<thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(rows)
            + "\n</tbody>\n</table>")


def _img_data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def write_html(sections: list[Section], header: list[str], out_dir: Path) -> Path:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>forgetbench report</title>", f"<style>{CSS}</style></head><body>",
             "<h1>forgetbench report</h1>", '<div class="header">' + "<br>".join(e(h) for h in header) + "</div>",
             "<h2>Contents</h2><ul>"]
    parts += [f'<li><a href="#{s.anchor}">{e(s.title)}</a></li>' for s in sections]
    parts.append("</ul>")
    for s in sections:
        parts.append(f'<h2 id="{s.anchor}">{e(s.title)}</h2>')
        parts += [f"<p>{e(p)}</p>" for p in s.intro]
        if s.notes:
            parts.append("<p><strong>Data and setting</strong></p><ul>" +
                         "".join(f"<li>{e(n)}</li>" for n in s.notes) + "</ul>")
        if s.claims:
            parts.append("<p><strong>Claims checked</strong></p><ul>" +
                         "".join(f"<li>{e(c)}</li>" for c in s.claims) + "</ul>")
        for f in s.figures:
            parts += [f'<figure id="{e(f.stem)}"><img alt="{e(f.title)}" src="{_img_data_uri(f.png)}">',
                      f"<figcaption><strong>{e(f.title)}.</strong> {e(f.caption)} "
                      f'<span class="links"><a href="{e(_rel(f.png, out_dir))}">PNG</a>'
                      f'<a href="{e(_rel(f.pdf, out_dir))}">PDF</a></span></figcaption></figure>']
        if s.skipped:
            parts.append("<ul>" + "".join(f'<li class="skip">Figure skipped: {e(k.title)}: {e(k.reason)}.</li>'
                                          for k in s.skipped) + "</ul>")
        for t in s.tables:
            links = "".join(f'<a href="{e(_rel(p, out_dir))}">{k.upper()}</a>' for k, p in t.files.items())
            parts += [f"<h3>{e(t.title)}</h3>", f'<div class="links">{links}</div>']
            if t.note:
                cls = "warn" if t.note.startswith("WARNING") else "note"
                parts.append(f'<p class="{cls}">{e(t.note)}</p>')
            frame, cut = _shown(t)
            parts.append(_table_html(frame))
            if cut:
                parts.append(f'<p class="note">{e(cut)}</p>')
        if s.provenance is not None and not s.provenance.frame.empty:
            links = "".join(f'<a href="{e(_rel(p, out_dir))}">{k.upper()}</a>'
                            for k, p in s.provenance.files.items())
            parts += [f"<h3>{e(s.provenance.title)}</h3>", f'<div class="links">{links}</div>',
                      _table_html(_shown(s.provenance)[0])]
            if _shown(s.provenance)[1]:
                parts.append(f'<p class="note">{e(_shown(s.provenance)[1])}</p>')
    parts.append("</body></html>")
    path = out_dir / "index.html"
    path.write_text("\n".join(parts) + "\n")
    return path
