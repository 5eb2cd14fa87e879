# The two commands a newcomer needs are `make demo` and `make test`; each
# bootstraps its own virtual environment from a clean checkout.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SEEDS  ?= 200

.PHONY: demo test bench sim lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch must come first: an unpinned resolve pulls CUDA wheels.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[fl,dev,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fedledger demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/fedledger bench ledger-core

sim: $(STAMP)
	$(VENV)/bin/fedledger sim --seeds $(SEEDS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) demo-run report.json
