# hvdlm: `make demo` and `make test` each set up .venv first (idempotent, cached Horovod wheel).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hvdlm-setup
PYTEST_ARGS ?=

.PHONY: setup test demo clean

setup: $(STAMP)

$(STAMP): setup.py scripts/install_horovod.sh $(wildcard scripts/horovod-patches/*.patch)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check wheel setuptools numpy torch==2.13.0
	PYTHON=$(PY) scripts/install_horovod.sh
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	@touch $@

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" scripts/demo.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo-out
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
