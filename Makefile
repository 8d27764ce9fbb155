# forgetbench: `make demo` runs one setting per paper and writes the report; `make test` runs the test suite;
# `make smoke-check` runs the CI smoke gate (every method, tiny real data, compared with committed targets).
# The virtualenv lives outside the clone (~/.cache/forgetbench/venv-<hash of dependencies>) and is reused.
SHELL := /bin/bash
VENV = $$(bash .ci/venv.sh)
RESULTS ?= results

SMOKE_OUT ?= $(or $(TMPDIR),/tmp)/forgetbench-smoke-$$$$
SMOKE_ARGS ?=

.PHONY: venv demo test smoke-check bench clean-results

venv:
	@bash .ci/venv.sh

# one setting per paper (a subset of sweeps/ci_smoke.yaml), then the report (verdicts first)
demo:
	@V=$(VENV) && $$V/bin/forgetbench run sweeps/demo.yaml --out $(RESULTS) --executor local --workers 2 \
	  --no-progress && \
	$$V/bin/forgetbench report $(RESULTS)/demo --out $(RESULTS)/report && \
	$$V/bin/forgetbench verdicts $(RESULTS)/demo && \
	echo "report of the demo sweep: $(RESULTS)/report/index.html (self-contained), $(RESULTS)/report/index.md"

# the CI regression gate: every method on tiny real data, from an empty store, against the committed targets
# (re-baseline: make smoke-check SMOKE_ARGS=--update-targets, then commit sweeps/ci_smoke.targets.yaml)
smoke-check:
	@V=$(VENV) && out=$(SMOKE_OUT) && rm -rf "$$out" && \
	$$V/bin/forgetbench check sweeps/ci_smoke.yaml --targets sweeps/ci_smoke.targets.yaml \
	  --executor local --workers 2 --out "$$out" --no-progress \
	  --junit "$$out/junit.xml" --markdown "$$out/summary.md" $(SMOKE_ARGS); \
	rc=$$?; echo "smoke gate: exit $$rc; JUnit $$out/junit.xml, summary $$out/summary.md"; exit $$rc

test:
	@V=$(VENV) && $$V/bin/python -m pytest -q --durations=15 --timeout=900 $(PYTEST_ARGS)

bench:
	@V=$(VENV) && $$V/bin/python scripts/bench_epoch.py

clean-results:
	rm -rf $(RESULTS)/*/ 
