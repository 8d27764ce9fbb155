"""forgetbench command line: run, status, results."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench.config import SpecError, StoreError, short_repr


def _run_args(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="expand a sweep spec into runs and execute them")
    p.add_argument("spec", type=Path)
    p.add_argument("--out", type=Path, default=Path("results"), help="results store (default: results/)")
    p.add_argument("--executor", default="inline", help="inline | local | submitit-local | slurm | debug")
    p.add_argument("--workers", type=int, default=2,
                   help="worker processes (local) / concurrent jobs (submitit-local)")
    p.add_argument("--detach", action="store_true",
                   help="slurm / submitit-local: return once submitted (job ids in RESULTS/<spec>/jobs.json); "
                        "follow with `forgetbench status`")
    p.add_argument("--dry-run", action="store_true", help="list the runs without executing them")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow `trust_remote_code: true` in an hf: model's kwargs (runs the Python files of that "
                        "model directory); without this flag such a spec exits 2")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. --set train.epochs=1 (repeatable)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--metric", default="test_acc", help="metric of the printed summary table")


def _status_args(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("status", help="done / failed / running / queued / pending runs of a sweep folder (or all "
                                      "under a results dir), job logs of failed and running jobs, tuning studies")
    s.add_argument("path", type=Path)
    s.add_argument("--no-jobs", action="store_true", help="do not query the job scheduler")


def _results_args(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("results", help="print the mean ± std table of a sweep folder, or export one row per run")
    r.add_argument("path", type=Path)
    r.add_argument("--metric", default="test_acc")
    r.add_argument("--format", choices=("csv", "parquet", "json"), default=None,
                   help="export one tidy row per run (config columns, metrics, status, provenance) instead")
    r.add_argument("--output", type=Path, default=None, help="file of --format (default: results.<format>)")


def _report_args(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser("report", help="tables and plots of the papers from a results store")
    rep.add_argument("results", type=Path)
    rep.add_argument("--out", type=Path, default=Path("report_out"))


def _verdicts_args(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("verdicts", help="each paper's claims judged on a results store (paired over seeds, 95 %% CI)")
    v.add_argument("results", type=Path)
    v.add_argument("--ci", choices=("t", "bootstrap"), default="t", help="Student t (default) or seeded bootstrap")
    v.add_argument("--paper", default=None, help="only this paper's claims")


def _plan_args(sub: argparse._SubParsersAction) -> None:
    pl = sub.add_parser("plan", help="the spec that fills a paper's published table, what a store has for each "
                                     "cell, and the cost of the rest in device-hours")
    pl.add_argument("target", metavar="PAPER[:TABLE]", help="a paper key; TABLE: a substring of its table names")
    pl.add_argument("--results", type=Path, default=None, help="a results store to check the cells against")
    pl.add_argument("--device", default="h100", help="device for the cost estimate: " + "h100, h200, a100, v100, l4")
    pl.add_argument("--out", type=Path, default=None, help="write the spec here (default: print its path only)")
    pl.add_argument("--utilisation", type=float, default=None, help="fraction of the device's peak sustained "
                                                                    "(default 0.10, an assumption)")


def _tune_args(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("tune", help="optuna tuning of a spec's `tune:` section (validation split only)")
    t.add_argument("spec", type=Path)
    t.add_argument("--out", type=Path, default=Path("results"))
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--n-trials", type=int, default=None, help="override tune.n_trials")
    t.add_argument("--workers", type=int, default=None, help="override tune.workers (parallel workers, one study)")
    t.add_argument("--executor", default=None, help="override tune.executor: local | slurm | submitit-local")
    t.add_argument("--storage", default=None, help="override tune.storage: sqlite:///F | journal:PATH | RDB URL")
    t.add_argument("--detach", action="store_true", help="slurm / submitit-local: return once the workers are "
                                                         "submitted")
    t.add_argument("--no-progress", action="store_true")


def _check_args(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("check", help="run (or reuse) a sweep and compare each (setting, method, metric) with a "
                                     "targets file; exit 0 all pass, 1 any fail, 2 bad input")
    c.add_argument("spec", type=Path)
    c.add_argument("--targets", type=Path, required=True, help="targets file (YAML or JSON)")
    c.add_argument("--out", type=Path, default=Path("results"))
    c.add_argument("--executor", default="inline")
    c.add_argument("--workers", type=int, default=2)
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--junit", type=Path, default=None, help="write JUnit XML (one testcase per row)")
    c.add_argument("--markdown", type=Path, default=None, help="write a Markdown summary")
    c.add_argument("--update-targets", action="store_true", help="write the targets file from this run")
    c.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    """The `forgetbench` command line: one sub-command each, its arguments defined by one function below."""
    parser = argparse.ArgumentParser(prog="forgetbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_run_args, _status_args, _results_args, _report_args, _verdicts_args, _plan_args, _tune_args, _check_args):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from bench.security import set_remote_code
    set_remote_code(getattr(args, "trust_remote_code", False))  # only `run --trust-remote-code` allows remote code
    try:
        return COMMANDS[args.command](args)
    except SpecError as e:
        print(f"forgetbench: invalid spec: {e}", file=sys.stderr)
        return 2
    except StoreError as e:
        print(f"forgetbench: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, read-only or vanished store while running: one line, no traceback
        print(f"forgetbench: {args.command} stopped: {os_message(e)}", file=sys.stderr)
        return 1
    except Exception as e:
        bad = _diagnose_store(args) if args.command in ("run", "status", "results") else []
        if not bad or os.environ.get("FORGETBENCH_DEBUG"):
            raise
        print(f"forgetbench: malformed results store: {'; '.join(bad)} (fix or delete these files; the error "
              f"was {type(e).__name__}: {str(e)[:200]})", file=sys.stderr)
        return 2


def os_message(e: OSError) -> str:
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f)
    return f"{e.strerror or type(e).__name__}" + (f": {where[:300]}" if where else "") + \
        (f" [errno {e.errno}]" if e.errno else "")


def _check_out(out: Path, name: str) -> None:
    """--out must be a folder we can create and write in (checked before any run starts)."""
    target = out / name
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise SpecError("--out", str(out), f"a folder this user can create and write in ({os_message(e)})") from None


def _diagnose_store(args: argparse.Namespace) -> list[str]:
    """After an unexpected error in run/status/results: the store files that are not what they should be
    (a JSON object), so the message can name them instead of printing a traceback."""
    import json

    from bench.store import RESULT, SWEEP
    root = Path(getattr(args, "out", None) or args.path) if args.command == "run" else Path(args.path)
    bad: list[str] = []
    try:
        candidates = [*root.glob(SWEEP), *root.glob(f"*/{SWEEP}"), *root.glob(f"*/{RESULT}"),
                      *root.glob(f"*/*/{RESULT}"), *root.glob("*/*/config.json")]
        for f in candidates:
            try:
                obj = json.loads(f.read_text())
            except (OSError, ValueError) as e:
                bad.append(f"{f}: unreadable ({type(e).__name__})")
                continue
            if not isinstance(obj, dict):
                bad.append(f"{f} holds a JSON {type(obj).__name__} ({short_repr(obj, 60)}), not an object")
            if len(bad) >= 5:
                break
    except OSError:
        pass
    return bad


def cmd_run(args: argparse.Namespace) -> int:
    from bench.spec import load_spec, run_id
    from bench.store import register_sweep

    spec = load_spec(args.spec, args.overrides)
    if args.dry_run:
        from bench.plan import extra_trainings, trainings
        for run in spec.runs:
            also = sorted({t.seed for t in extra_trainings(run)})
            print(f"{run_id(run)}  {run.dataset.name:<12} {run.model.name:<16} {run.method.name:<12} seed={run.seed}"
                  f"  noise={run.dataset.noise.kind}:{run.dataset.noise.rate}"
                  + (f"  (also trains seed {', '.join(map(str, also))})" if also else ""))
        kinds: dict[str, int] = {}
        for t, _ in trainings(spec.runs).values():
            kinds[t.what] = kinds.get(t.what, 0) + 1
        print(f"{len(spec.runs)} runs; {sum(kinds.values())} distinct trainings (shared ones once): "
              + ", ".join(f"{n} {w}" for w, n in kinds.items()))
        return 0
    from bench.executors import EXECUTORS
    if args.executor not in EXECUTORS:
        raise SpecError("--executor", args.executor, ", ".join(EXECUTORS.names()))
    if args.workers < 1:
        raise SpecError("--workers", args.workers, "an integer >= 1")
    if args.detach and args.executor not in ("slurm", "submitit-local"):
        raise SpecError("--detach", args.executor, "only with --executor slurm or submitit-local")
    from bench.executors.base import run_threads
    run_threads()  # FORGETBENCH_THREADS: checked before anything starts
    _check_out(args.out, spec.name)
    spec_dir = args.out / spec.name
    todo = register_sweep(args.out, spec.name, spec.source, spec.runs)
    print(f"{spec.name}: {len(spec.runs)} runs, {len(spec.runs) - len(todo)} already done, {len(todo)} to run "
          f"({args.executor})", flush=True)
    t0 = time.perf_counter()
    failed = []
    if todo:
        executor = EXECUTORS.get(args.executor)(workers=args.workers, resources=spec.resources,
                                                **({"detach": True} if args.detach else {}))
        results = executor.run(todo, args.out, progress=not args.no_progress)
        if args.detach:
            return 0
        failed = [r for r in results if r["status"] == "failed"]
        for r in failed:
            print(f"FAILED {r['run_id']}: {r['reason']}", file=sys.stderr)
    print(f"wall time {time.perf_counter() - t0:.1f} s")
    _warn_versions(spec_dir)
    _print_table(spec_dir, args.metric)
    return 1 if failed else 0


def _warn_versions(spec_dir: Path) -> None:
    """Say so (stderr) when the sweep's finished runs come from different code versions."""
    from bench.provenance import mixed_versions_warning
    from bench.store import finished_results
    msg = mixed_versions_warning(spec_dir.name, finished_results(spec_dir))
    if msg:
        print(msg, file=sys.stderr)


def _print_table(spec_dir: Path, metric: str) -> None:
    from bench.results import format_table, load_results, summarize
    df = load_results(spec_dir)
    if not df.empty:
        print(format_table(summarize(df, metric), metric))
        if metric == "test_acc" and "protocol" in df and (df["protocol"] == "test_half").any():
            print("note: methods with protocol test_half are scored on test halves (the other half selects), the "
                  "rest on the full test set; `forgetbench verdicts` compares them on the same halves")


def cmd_status(args: argparse.Namespace) -> int:
    from bench.store import spec_dirs, sweep_status
    from bench.tune.status import study_dirs, tune_status
    root = Path(args.path)
    dirs = spec_dirs(root)
    tunes = study_dirs(root)
    if not dirs and not tunes:
        print(f"no sweep folders under {args.path}", file=sys.stderr)
        return 1
    for d in dirs:
        if args.no_jobs:
            st = sweep_status(d)
            st.update(queued=0, jobs=[])
        else:
            from bench.executors.submitit import sweep_progress
            st = sweep_progress(d)
        jobs = f"; {st['running']} running, {st['queued']} queued" if st.get("submissions") else ""
        live = f", {st['running']} running" if st.get("running") and not st.get("submissions") else ""
        live += f", {st['interrupted']} interrupted (rerun to resume)" if st.get("interrupted") else ""
        print(f"{st['spec']}: {st['done']} done, {st['failed']} failed{live}, {st['pending']} pending "
              f"(of {st['total']}){jobs}")
        _warn_versions(d)
        for rid, reason in st["failures"]:
            print(f"  failed {rid}: {reason}")
        for job in st["jobs"]:
            print(f"  {job['executor']} job {job['job_id']} [{job['state']}]: {len(job['runs'])} runs\n"
                  f"    log: {job['stdout']}\n    err: {job['stderr']}")
    for t in tunes:
        for line in tune_status(t):
            print(line)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from bench.store import spec_dirs
    if args.format:
        from bench.results import export_results
        try:
            print(f"wrote {export_results(args.path, args.format, args.output)}")
        except RuntimeError as e:
            print(f"forgetbench: {e}", file=sys.stderr)
            return 2
        return 0
    for d in spec_dirs(args.path):
        print(f"## {d.name}")
        _print_table(d, args.metric)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from report.build import build_report
    build_report(args.results, args.out)
    return 0


def cmd_verdicts(args: argparse.Namespace) -> int:
    from report.verdicts import load_runs, verdict_frame, verdicts
    if not args.results.exists():
        print(f"forgetbench: results: got {str(args.results)!r}; allowed: an existing results folder", file=sys.stderr)
        return 2
    table = verdict_frame(verdicts(load_runs(args.results), ci=args.ci))
    if args.paper:
        table = table[table["paper"] == args.paper]
    for paper, t in table.groupby("paper", sort=False):
        print(f"\n## {paper}\n")
        print(t.drop(columns=["paper", "source"]).to_markdown(index=False))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    import shutil

    import pandas as pd

    from bench.paper import PAPERS, papers
    from bench.paths import PROJECT_ROOT
    from bench.plan import DEVICES, UTILISATION, cells, cost_table, extra_trainings, fmt_hours, table_runs, total_hours
    from bench.results import load_results
    from bench.spec import load_spec
    key, _, table = args.target.partition(":")
    keys = [p.key for p in papers()]
    if key not in keys:
        raise SpecError("PAPER", key, f"one of {', '.join(keys)}")
    if args.device not in DEVICES:
        raise SpecError("--device", args.device, f"one of {', '.join(DEVICES)}")
    paper = PAPERS.get(key)
    if not paper.plan:
        raise SpecError("PAPER", key, "a paper that declares its published grid (Paper.plan)")
    spec_path = Path(PROJECT_ROOT) / "sweeps" / paper.plan
    spec = load_spec(spec_path)
    runs = spec.runs
    if table:
        ref = pd.read_csv(paper.reference, dtype=str, keep_default_na=False) if paper.reference else pd.DataFrame()
        ref = ref[ref["table"].str.contains(table, case=False, regex=False)] if not ref.empty else ref
        if ref.empty:
            tables = sorted(set(pd.read_csv(paper.reference, dtype=str)["table"])) if paper.reference else []
            raise SpecError("TABLE", table, f"a substring of one of: {'; '.join(tables)}")
        runs = table_runs(runs, ref, paper.aliases)
        print(f"{paper.title}: table(s) {', '.join(sorted(set(ref['table'])))}")
    print(f"published grid: {spec_path} ({len(runs)} of its {len(spec.runs)} runs fill the table)")
    if args.out:
        shutil.copyfile(spec_path, args.out)
        print(f"spec written to {args.out} (run it with: forgetbench run {args.out} --executor slurm)")
    store = load_results(args.results) if args.results and args.results.exists() else pd.DataFrame()
    cs = cells(runs, store)
    print(f"\ncells ({len(cs)}): what {args.results or 'the store (none given)'} has")
    print(pd.DataFrame([{"setting": c.setting, "method": c.method, "store": c.status()} for c in cs])
          .to_markdown(index=False))
    extra = [(r, sorted({t.seed for t in extra_trainings(r)})) for r in runs]
    extra = [(r, seeds) for r, seeds in extra if seeds]
    if extra:
        r, seeds = extra[0]
        print(f"\nalso trained: e.g. {r.method.name} seed {r.seed} trains seeds {', '.join(map(str, seeds))} "
              f"({len(extra)} runs train other seeds; shared trainings are counted once below)")
    util = UTILISATION if args.utilisation is None else args.utilisation
    if not 0 < util <= 1:
        raise SpecError("--utilisation", args.utilisation, "a number in (0, 1]")
    df, note = cost_table(runs, store, args.device, util)
    print(f"\ncost of what is not done yet ({note}):")
    print(df.to_markdown(index=False, floatfmt=".1f") if not df.empty else "(nothing left to run)")
    print(f"total: {fmt_hours(total_hours(df, args.device))} of {args.device} time")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from bench.tune.launch import run_tune
    return run_tune(args)


COMMANDS = {"run": cmd_run, "status": cmd_status, "results": cmd_results, "report": cmd_report,
            "tune": cmd_tune, "verdicts": cmd_verdicts, "plan": cmd_plan}


def cmd_check(args: argparse.Namespace) -> int:
    from bench.check import run_check
    return run_check(args)


COMMANDS["check"] = cmd_check


if __name__ == "__main__":
    sys.exit(main())
