"""The report at scale (issue 15, bullet 6): a synthetic store of ~300 runs (scripts/make_synthetic_store.py)
reports with capped figures, runs without per-epoch logs are reported, not fatal, and `forgetbench results
--format` exports one tidy row per run that round-trips."""
from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main as cli_main
from bench.paths import PROJECT_ROOT

SHA = "0123456789abcdef0123456789abcdef01234567"


def _template(root: Path) -> Path:
    """A tiny 'real' store: one finished naive digits run with its metrics.jsonl (as `forgetbench run` writes)."""
    d = root / "smoke" / "aaaaaaaaaaaa"
    d.mkdir(parents=True)
    config = {"spec": "smoke", "seed": 0, "device": "auto",
              "dataset": {"name": "digits", "noise": {"kind": "none", "rate": 0.0}, "val_fraction": 0.1,
                          "train_per_class": None, "test_per_class": None, "seed": 0, "classes": None},
              "model": {"name": "small_cnn", "kwargs": {"width": 16}}, "method": {"name": "naive", "params": {}},
              "train": {"epochs": 8, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05,
                                                                     "weight_decay": 5e-4, "betas": [0.9, 0.999]}}}
    res = {"run_id": "aaaaaaaaaaaa", "spec": "smoke", "status": "done", "config": config, "git_sha": SHA,
           "git_dirty": False, "git_diff_hash": None, "versions": {"torch": "2.x", "python": "3.11"},
           "device": {"device": "cpu", "host": "vm", "cpu": "x86_64", "torch_threads": 1},
           "data": {"note": "sklearn digits (8x8 grey, single split)", "n_train": 1293, "n_val": 145, "n_test": 359,
                    "realised_rate": 0.0},
           "metrics": {"test_acc": 0.96, "val_acc": 0.95, "test_loss": 0.2, "epochs": 8},
           "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:00:01+00:00",
           "wall_time_s": 0.4}
    (d / "result.json").write_text(json.dumps(res))
    curve = [{"epoch": e, "val_acc": 0.1 * e, "train_acc": 0.1 * e, "forget_fraction": 0.01, "forget_split": "val",
              "lr": 0.05} for e in range(1, 9)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in curve))
    return root


def _make_store(src: Path, out: Path, n: int, **kw) -> Path:
    spec = importlib.util.spec_from_file_location("make_synthetic_store",
                                                  PROJECT_ROOT / "scripts" / "make_synthetic_store.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = ["--src", str(src), "--out", str(out), "--runs", str(n)]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    assert mod.main(args) == 0
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("scale")
    return _make_store(_template(tmp / "src"), tmp / "store", 300, no_curves=0.1, failed=0.02, shas=2)


def test_synthetic_store_layout(store):
    runs = list(store.glob("*/*/result.json"))
    assert len(runs) == 300
    ids = {p.parent.name for p in runs}
    assert len(ids) == 300  # distinct run ids
    methods = {json.loads(p.read_text())["config"]["method"]["name"] for p in runs}
    assert {"naive", "kf_inf", "know_x2", "cf_replay"} <= methods
    assert any(not (p.parent / "metrics.jsonl").exists() for p in runs)
    sweeps = [json.loads(p.read_text()) for p in store.glob("*/sweep.json")]
    assert sum(len(s["runs"]) for s in sweeps) == 300


@pytest.mark.slow
def test_report_on_300_runs(store, tmp_path):
    out = tmp_path / "report"
    assert cli_main(["report", str(store), "--out", str(out)]) == 0
    md = (out / "index.md").read_text()
    assert (out / "index.html").is_file()
    figs = list((out / "figures").glob("*.png"))
    assert figs and len(figs) <= 20  # per-setting figures are capped, not one per setting
    assert "Not drawn:" in md  # the lines left out of a figure are named in its caption
    assert "have no per-epoch log (metrics.jsonl)" in md  # runs without logs: reported
    assert "more settings" in md  # the settings without a figure are listed as skipped
    # provenance: the store mixes two code versions, and every table says so
    assert "WARNING: these" in md and "code versions" in md


def test_report_without_any_metrics_jsonl(tmp_path):
    """The old crash: no finished run has a metrics.jsonl (KeyError: 'run_id' in the curves)."""
    src = _template(tmp_path / "src")
    store = _make_store(src, tmp_path / "store", 60, no_curves=1.0, failed=0.0)
    assert not list(store.glob("*/*/metrics.jsonl"))
    out = tmp_path / "report"
    assert cli_main(["report", str(store), "--out", str(out)]) == 0
    md = (out / "index.md").read_text()
    assert "Figure skipped" in md and "metrics.jsonl" in md


def test_one_run_without_metrics_jsonl(tmp_path):
    src = _template(tmp_path / "src")
    shutil.copytree(src / "smoke" / "aaaaaaaaaaaa", src / "smoke" / "bbbbbbbbbbbb")
    res = json.loads((src / "smoke" / "bbbbbbbbbbbb" / "result.json").read_text())
    res["run_id"], res["config"]["seed"] = "bbbbbbbbbbbb", 1
    (src / "smoke" / "bbbbbbbbbbbb" / "result.json").write_text(json.dumps(res))
    (src / "smoke" / "bbbbbbbbbbbb" / "metrics.jsonl").unlink()
    (src / "smoke" / "sweep.json").write_text(json.dumps({"name": "smoke", "runs": ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]}))
    out = tmp_path / "report"
    assert cli_main(["report", str(src), "--out", str(out)]) == 0
    md = (out / "index.md").read_text()
    assert "1 of 2 finished runs have no per-epoch log" in md
    assert (out / "figures" / "generic_smoke_val_curves.png").is_file()


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_results_export_round_trips(store, tmp_path, fmt, capsys):
    from bench.results import load_results
    path = tmp_path / f"runs.{fmt}"
    rc = cli_main(["results", str(store), "--format", fmt, "--output", str(path)])
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        assert rc == 2 and not path.exists()
        err = capsys.readouterr().err
        assert "pyarrow" in err and "Traceback" not in err
        return
    assert rc == 0 and path.is_file()
    want = load_results(store)
    got = {"csv": lambda: pd.read_csv(path, dtype={"run_id": str, "spec": str}), "json": lambda: pd.read_json(path, orient="records", dtype=False),
           "parquet": lambda: pd.read_parquet(path)}[fmt]()
    assert len(got) == len(want) == 300
    assert list(got.columns) == list(want.columns)
    for col in ("config.train.optimizer.lr", "config.train.epochs"):  # every config column is there
        assert col in got
    for col in ("status", "git_sha", "git_diff_hash", "code_version", "device.host", "versions.torch",
                "started_at", "test_acc", "forgetting_bpc", "method", "seed"):
        assert col in got, col
    got, want = got.set_index("run_id").sort_index(), want.set_index("run_id").sort_index()
    assert (got["status"] == want["status"]).all()
    assert list(got["spec"]) == list(want["spec"])
    for col in ("test_acc", "config.train.optimizer.lr", "seed", "wall_time_s"):
        a, b = pd.to_numeric(got[col]), pd.to_numeric(want[col])
        assert ((a - b).abs().fillna(0) < 1e-12).all() and (a.isna() == b.isna()).all(), col
    assert set(got["code_version"]) == set(want["code_version"]) and len(set(want["code_version"])) == 2
    assert not math.isnan(float(got["test_acc"].dropna().iloc[0]))


def test_index_shows_long_tables_cut_with_a_pointer(tmp_path):
    from report.html import MAX_INDEX_ROWS, Section, Table, write_html, write_markdown
    from report.tables import write_table
    frame = pd.DataFrame({"setting": [f"lr={i}" for i in range(MAX_INDEX_ROWS + 5)], "n": 3})
    files = write_table(frame, tmp_path / "tables", "big")
    sec = Section("Big", "big", tables=[Table("big", frame, files)])
    md = write_markdown([sec], [], tmp_path).read_text()
    html = write_html([sec], [], tmp_path).read_text()
    assert f"First {MAX_INDEX_ROWS} of {MAX_INDEX_ROWS + 5} rows; all of them in big.md, big.tex, big.csv" in md
    assert f"lr={MAX_INDEX_ROWS - 1} " in md and f"lr={MAX_INDEX_ROWS} " not in md
    assert f"First {MAX_INDEX_ROWS} of" in html
    assert len((tmp_path / "tables" / "big.md").read_text().splitlines()) == MAX_INDEX_ROWS + 5 + 2  # full file
