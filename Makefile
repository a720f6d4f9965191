# hvdlm: `make demo` and `make test` each set up .venv first (idempotent, cached Horovod wheel).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hvdlm-setup
PYTEST_ARGS ?=

.PHONY: setup test demo install clean mutation

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

# Mutation testing (mutmut) of the pure modules, not part of `make test`: hours on 2 cores for
# all of them; MODULES="requeue pieces" picks some (tests/README.md, docs/testing.md).
MODULES ?=
mutation: setup
	PY=$(PY) scripts/mutation.sh $(MODULES)

# Into an existing environment (a cluster module's or conda's Python), not .venv:
#   make install PYTHON=/path/to/python
# torch only if that Python lacks it, then the patched Horovod (cached wheel, else built), then
# hvdlm itself with its console scripts.
install:
	@$(PYTHON) -c 'import torch' 2>/dev/null || \
		$(PYTHON) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PYTHON) -m pip install --quiet --disable-pip-version-check wheel setuptools numpy
	PYTHON=$(PYTHON) scripts/install_horovod.sh
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-build-isolation .
	@$(PYTHON) -m hvdlm --version

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo-out
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
