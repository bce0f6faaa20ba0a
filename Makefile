# Two entry points a newcomer needs; each sets itself up from nothing (Python 3.11+ on PATH).
#   make demo   simulated traffic with planted distillers, the full pipeline, a live table (~1 min)
#   make test   the whole test suite on two workers (installs promtool from Debian's prometheus package; 6-11 min on 2 cores)
#   make bench  throughput of every backend and of the baselines, side by side
#   make venv   only the virtualenv, .venv (every target builds it first)
#   make lock   refresh constraints.txt, the exact versions every target installs
# The `streamguard` command is .venv/bin/streamguard (or `source .venv/bin/activate` first).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS := cpu,kafka,metrics,bench,test,text
# torch==2.13.0+cpu (constraints.txt) is not on PyPI. This project's machines have it in pip's
# find-links (`pip config list`); elsewhere the install is retried with PyTorch's CPU index.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PIP_INSTALL = $(PY) -m pip install --quiet -c constraints.txt
LOCK_VENV := .lock-venv
# Extra pip flags for `make lock`, e.g. LOCK_PIP_FLAGS='--extra-index-url $(TORCH_INDEX)' off this project's machines.
LOCK_PIP_FLAGS ?=

.PHONY: venv demo test bench kernels lock clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -e '.[$(EXTRAS)]' || { \
	  echo "retrying with torch's CPU build from $(TORCH_INDEX)" >&2; \
	  $(PIP_INSTALL) --extra-index-url $(TORCH_INDEX) -e '.[$(EXTRAS)]'; }
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/streamguard demo

test: $(STAMP)
	scripts/install-ops-tools.sh $(VENV)
	# Two workers, one per core: the broker tests mostly wait on the broker and the service, and a
	# module stays on one worker (loadscope) so its broker and simulated world are built once.
	$(PY) -m pytest -q -n 2 --dist loadscope --durations=25

bench: $(STAMP)
	$(VENV)/bin/streamguard bench

kernels: $(STAMP)
	$(PY) scripts/check_kernels.py

# constraints.txt from scratch: the newest versions pyproject.toml allows, resolved in a throwaway
# virtualenv (its comment lines are kept). Then `make test` and commit constraints.txt.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet $(LOCK_PIP_FLAGS) -e '.[$(EXTRAS)]'
	{ grep '^#' constraints.txt; $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable; } > constraints.txt.new
	grep -q '^torch==.*+cpu$$' constraints.txt.new || { echo "make lock: torch is not the CPU build; pass LOCK_PIP_FLAGS='--extra-index-url $(TORCH_INDEX)'" >&2; exit 1; }
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)

clean:
	rm -rf $(VENV) $(LOCK_VENV) build dist *.egg-info
