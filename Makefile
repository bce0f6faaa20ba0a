# Two entry points a newcomer needs; each sets itself up from nothing (Python 3.11+ on PATH).
#   make demo   simulated traffic with planted distillers, the full pipeline, a live table
#   make test   the whole test suite (installs promtool from Debian's prometheus package)
#   make bench  throughput of every backend and of the baselines, side by side

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench kernels clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,kafka,metrics,bench,test,text]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/streamguard demo

test: $(STAMP)
	scripts/install-ops-tools.sh $(VENV)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/streamguard bench

kernels: $(STAMP)
	$(PY) scripts/check_kernels.py

clean:
	rm -rf $(VENV) build dist *.egg-info
