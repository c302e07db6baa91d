# Two commands for a newcomer: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
export PYTHONASYNCIODEBUG ?= 0

.PHONY: demo test test-fast bench bench-server node-packages services serve calibrate validate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install when the dependency list changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e . 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -c "import sim, chatlab, chatcore, reference_server"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]' 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -c "import sim, chatlab, chatcore, reference_server, pytest, nbmake, playwright"
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/chatlab compare

services:
	bash tools/ensure-services.sh

test: $(VENV)/.installed-dev services node-packages
	CHATLAB_SMALL=1 $(BIN)/python -W error::RuntimeWarning -m pytest -q --nbmake tests notebooks

test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -x -m "not browser and not slow" tests

bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks

# The server benchmark's Node.js side (Socket.IO 4.8, socket.io-client, ws) from the committed
# lock file; offline once installed. Without npm it says so and `make test` skips that one test.
NODE_DIR := benchmarks/server
$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "node-packages: npm not found; make bench-server needs Node.js 20 and npm" >&2; fi

node-packages: $(NODE_DIR)/node_modules/.installed

# Side-by-side server throughput (docs/PERFORMANCE.md); several minutes. ARGS="--quick" for a faster look.
bench-server: $(VENV)/.installed services node-packages
	env -u PYTHONASYNCIODEBUG $(BIN)/python -m benchmarks.server $(ARGS)

serve: $(VENV)/.installed
	$(BIN)/chatlab serve

calibrate: $(VENV)/.installed
	$(BIN)/chatlab calibrate --scale 2

validate: $(VENV)/.installed
	$(BIN)/chatlab validate --repeat 3 --out data

clean:
	rm -rf $(VENV) .pytest_cache out
