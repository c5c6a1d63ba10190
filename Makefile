# Newcomer entry points: `make demo` and `make test` (see README.md).
#
# Both build a virtualenv in .venv from the python3 on PATH (override: make PYTHON=python3.12)
# and install testserver into it in editable mode. The install is a file target stamped on
# pyproject.toml, so repeated runs skip it until the dependencies change.

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip --disable-pip-version-check --quiet
LINT_PATHS := testserver tests bench examples
BENCH_SCRIPTS = $(sort $(wildcard bench/bench_*.py))

.PHONY: demo test lint bench fuzz soak clean

## demo: install testserver and run examples/demo.py against examples/calc
demo: $(VENV)/.installed
	$(VPY) examples/demo.py

## test: install testserver with its test extras, lint, then run the pytest suite in parallel
# Two pytest-xdist workers per CPU: most tests wait on the servers and tools they start.
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print(2 * len(os.sched_getaffinity(0)))')
test: lint
	$(VPY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

## lint: the ruff checks that `make test` runs first
lint: $(VENV)/.installed-test
	$(VPY) -m ruff check $(LINT_PATHS)
	$(VPY) -m ruff format --check $(LINT_PATHS)

## bench: run every benchmark script in its quick mode (each bench/bench_*.py takes --quick)
bench: $(VENV)/.installed-test
	@test -n "$(BENCH_SCRIPTS)" || { echo "no bench/bench_*.py scripts yet"; exit 1; }
	set -e; for script in $(BENCH_SCRIPTS); do $(VPY) $$script --quick; done

## fuzz: fuzz the frame and packet decoders, FUZZ_SECONDS each (atheris if installed, else hypothesis)
FUZZ_SECONDS ?= 60
fuzz: $(VENV)/.installed-test
	$(VPY) bench/fuzz_decoders.py --seconds $(FUZZ_SECONDS)

## soak: one server, 10,000 batches and 1,000 reload cycles; RSS, fds and processes sampled
soak: $(VENV)/.installed-test
	nice -n 10 $(VPY) bench/bench_soak.py

## clean: remove the virtualenv and generated files
clean:
	rm -rf $(VENV) build dist *.egg-info bench/out .hypothesis .ruff_cache
	rm -rf examples/calc/.testrepository examples/calc/.stestr
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +

$(VPY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { \
	  echo "testserver needs Python 3.10 or newer; try: make PYTHON=python3.12 ..." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }

$(VENV)/.installed: pyproject.toml | $(VPY)
	$(PIP) install -e .
	touch $@

# The test extras include the base install, so this stamps both.
$(VENV)/.installed-test: pyproject.toml | $(VPY)
	$(PIP) install -e '.[test]'
	touch $(VENV)/.installed $@
