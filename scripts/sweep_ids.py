"""Run ids and stage keys of every repo sweep, as JSON: the layout refactor must leave them unchanged.

For each run: its id, the digest of its base-stage key, and the first shared stage its method asks for
(name-digest), captured by stopping the method at that point (no training, no data beyond what the key needs).
`python scripts/sweep_ids.py > tests/data/sweep_ids.json` writes the committed list.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


class _Stop(Exception):
    pass


def sweep_ids() -> dict:
    import bench.stages as stages
    try:
        from bench.ids import run_id
    except ImportError:  # before the layout refactor
        from bench.spec import run_id
    from bench.method import RunContext, load_methods, make_method
    from bench.spec import load_spec

    load_methods()
    seen: list[str] = []
    real = stages.stage_dir

    def capture(stages_dir, name, key):
        seen.append(real(Path("."), name, key).name)
        raise _Stop

    out: dict = {}
    for path in sorted((ROOT / "sweeps").rglob("*.yaml")):
        if path.name.endswith(".targets.yaml"):   # the smoke gate's targets, not a spec
            continue
        spec = load_spec(path)
        rows = {}
        for run in spec.runs:
            rid = run_id(run)
            ctx = RunContext(config=run, run_dir=Path(tempfile.gettempdir()), stages_dir=Path("."),
                             device=torch.device("cpu"), progress=False)
            base = real(Path("."), "base", stages.base_key(ctx)).name
            seen.clear()
            bound = [m for m in list(sys.modules.values()) if getattr(m, "stage_dir", None) is real]
            for m in bound:
                m.stage_dir = capture
            try:
                method = make_method(run)
                method.run(ctx)
            except _Stop:
                pass
            except Exception as e:  # data absent here, or the method needs data before its first stage
                seen.append(f"<{type(e).__name__}>")
            finally:
                for m in bound:
                    m.stage_dir = real
            rows[rid] = {"base": base, "first_stage": seen[0] if seen else None}
        out[str(path.relative_to(ROOT / "sweeps"))] = {"name": spec.name, "runs": rows}
    return out


if __name__ == "__main__":
    json.dump(sweep_ids(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
