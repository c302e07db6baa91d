# Two commands for a newcomer: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test test-fast typecheck bench bench-cluster services serve cluster calibrate validate validate-cluster clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install when the dependency list changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e . 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -c "import sim, chatlab, chatcore, reference_server"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]' 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -c "import sim, chatlab, chatcore, reference_server, pytest, nbmake, playwright, mypy"
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/chatlab compare

services:
	bash tools/ensure-services.sh

# The suite runs in asyncio's debug mode with every warning an error (pyproject.toml:
# filterwarnings), after the type check.
test: $(VENV)/.installed-dev services typecheck
	PYTHONASYNCIODEBUG=1 CHATLAB_SMALL=1 $(BIN)/python -W error -m pytest -q --nbmake tests notebooks

# mypy over the packages listed in pyproject.toml ([tool.mypy] files).
typecheck: $(VENV)/.installed-dev
	$(BIN)/python -m mypy

test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -x -m "not browser and not slow" tests

bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks

serve: $(VENV)/.installed
	$(BIN)/chatlab serve

# Four servers behind HAProxy on private Redis and PostgreSQL (installs them first if root).
cluster: $(VENV)/.installed services
	$(BIN)/chatlab cluster --servers 4

# What four servers behind HAProxy cost on this machine against one (docs/PERFORMANCE.md).
bench-cluster: $(VENV)/.installed services
	$(BIN)/python -m benchmarks.cluster_cost --repeat 2

calibrate: $(VENV)/.installed
	$(BIN)/chatlab calibrate --scale 2

validate: $(VENV)/.installed services
	$(BIN)/chatlab validate --repeat 3 --cluster 4 --out data

# Only the cluster crash, merged into the committed table and figure.
validate-cluster: $(VENV)/.installed services
	$(BIN)/chatlab validate --transports none --crash-transport none --cluster 4 --repeat 3 --merge --out data

clean:
	rm -rf $(VENV) .pytest_cache out
