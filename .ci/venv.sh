#!/usr/bin/env bash
# Prints the path of a virtualenv keyed by the hash of pyproject's dependency lists; creates and fills it if
# missing, and (re)points the editable install at this checkout. Reused across clones: no re-download.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
hash=$($PY - <<'PY'
import hashlib, json, tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print(hashlib.sha256(json.dumps([p["dependencies"], p.get("optional-dependencies", {})], sort_keys=True).encode()).hexdigest()[:12])
PY
)
root=${FORGETBENCH_VENV_ROOT:-$HOME/.cache/forgetbench}
venv=$root/venv-$hash
if [ ! -f "$venv/.complete" ]; then
  echo "creating virtualenv $venv (first time only)" >&2
  rm -rf "$venv"; mkdir -p "$root"
  $PY -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >&2 || true
  "$venv/bin/pip" install -q -e ".[slurm,tune,know,dev]" >&2
  touch "$venv/.complete"
fi
# Point the editable install at this checkout (cheap; no dependency resolution).
if ! "$venv/bin/python" -c "import bench, pathlib, sys; sys.exit(pathlib.Path(bench.__file__).resolve().parent.parent != pathlib.Path('.').resolve())" 2>/dev/null; then
  "$venv/bin/pip" install -q --no-deps --no-build-isolation -e . >&2
fi
echo "$venv"
