"""Executor-independent numbers (issue 15, bullet 4): every executor runs every run with the same torch thread
count (FORGETBENCH_THREADS, default 1), so the same run ids give identical metrics under `inline` and
`local --workers 2` (and `submitit-local`), and result.json records the count.

This sweep is sized so that the thread count matters: on a 2-core CPU its losses differ in the 6th-7th digit
between 1 and 2 threads (what `local` with cpu_count // workers threads and `inline` with all cores used to
give)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.config import SpecError
from bench.executors.base import pinned_threads, run_threads
import yaml  # noqa: E402
from conftest import tiny_spec_dict  # noqa: E402

SPEC = yaml.safe_dump(tiny_spec_dict(name="threads", seeds=[0, 1], models=[{"name": "small_cnn", "width": 32}],
                                     train__batch_size=128, grid={"dataset.noise": [{"kind": "none", "rate": 0.0},
                                                                                    {"kind": "symmetric", "rate": 0.2}]}),
                      sort_keys=False)


def results(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("threads/*/result.json"))}


def sweep(tmp_path: Path, name: str, *args: str) -> dict[str, dict]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    out = tmp_path / name
    assert main(["run", str(spec), "--out", str(out), "--no-progress", *args]) == 0
    res = results(out)
    assert len(res) == 4 and all(r["status"] == "done" for r in res.values())
    return res


@pytest.mark.slow
def test_inline_and_local_give_identical_metrics(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("FORGETBENCH_THREADS", raising=False)
    before = torch.get_num_threads()
    inline = sweep(tmp_path, "inline", "--executor", "inline")
    assert torch.get_num_threads() == before  # the inline executor restores the caller's thread count
    local = sweep(tmp_path, "local", "--executor", "local", "--workers", "2")
    assert inline.keys() == local.keys()
    for rid in inline:
        assert inline[rid]["metrics"] == local[rid]["metrics"], rid
        assert inline[rid]["device"]["torch_threads"] == local[rid]["device"]["torch_threads"] == 1
    assert len({json.dumps(r["metrics"], sort_keys=True) for r in inline.values()}) == 4  # the runs differ


@pytest.mark.slow
def test_submitit_local_matches_inline(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("submitit")
    monkeypatch.delenv("FORGETBENCH_THREADS", raising=False)
    inline = sweep(tmp_path, "inline", "--executor", "inline")
    sub = sweep(tmp_path, "submitit", "--executor", "submitit-local", "--workers", "2")
    assert {k: v["metrics"] for k, v in inline.items()} == {k: v["metrics"] for k, v in sub.items()}
    assert {v["device"]["torch_threads"] for v in sub.values()} == {1}


def test_thread_setting_is_validated_and_restored(monkeypatch) -> None:
    monkeypatch.setenv("FORGETBENCH_THREADS", "3")
    assert run_threads() == 3
    before = torch.get_num_threads()
    with pinned_threads() as n:
        assert n == 3 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
    for bad in ("0", "-1", "two", "1.5"):
        monkeypatch.setenv("FORGETBENCH_THREADS", bad)
        with pytest.raises(SpecError, match="FORGETBENCH_THREADS"):
            run_threads()
    monkeypatch.delenv("FORGETBENCH_THREADS")
    assert run_threads() == 1
