# gradwatch: `make demo` runs the collector and a faulty training run; `make test` runs everything.
# Both create what they need: the virtual environment (.venv) and, for tests, Debian's
# prometheus, prometheus-alertmanager and chromium packages.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gradwatch-installed

.PHONY: help venv demo demo-ddp test lint stack-deps docs clean

help:
	@echo "make demo   collector + demo trainer with injected faults (Ctrl-C stops it)"
	@echo "make demo-ddp  the same with 2-rank torchrun jobs: hang, straggler, NaN, crash"
	@echo "make test   lint and the whole test suite"
	@echo "make lint   ruff and mypy only"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned, so pip takes the CPU build instead of resolving a CUDA one.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[agent,collector,dev]'
	touch $(STAMP)

venv: $(STAMP)

stack-deps:
	bash deploy/install-debian-packages.sh

demo: venv
	$(PY) -m gradwatch.cli demo

demo-ddp: venv
	$(PY) -m gradwatch.cli demo --ddp

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: venv stack-deps lint
	GRADWATCH_REQUIRE_STACK=1 $(PY) -m pytest -q

docs: venv
	$(PY) -m gradwatch.collector.rules.docs > docs/rules.md
	$(PY) -m gradwatch.cli.docs > docs/config.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
