# forgetbench: `make demo` runs the smoke sweep on embedded data; `make test` runs the test suite.
# The virtualenv lives outside the clone (~/.cache/forgetbench/venv-<hash of dependencies>) and is reused.
SHELL := /bin/bash
VENV = $$(bash .ci/venv.sh)
RESULTS ?= results

.PHONY: venv demo test bench clean-results

venv:
	@bash .ci/venv.sh

demo:
	@V=$(VENV) && $$V/bin/forgetbench run sweeps/smoke.yaml --out $(RESULTS) && \
	$$V/bin/forgetbench report $(RESULTS)/smoke --out $(RESULTS)/report && \
	echo "report of the smoke sweep: $(RESULTS)/report/index.html (self-contained), $(RESULTS)/report/index.md"

test:
	@V=$(VENV) && $$V/bin/python -m pytest -q --durations=15 --timeout=900 $(PYTEST_ARGS)

bench:
	@V=$(VENV) && $$V/bin/python scripts/bench_epoch.py

clean-results:
	rm -rf $(RESULTS)/*/ 
