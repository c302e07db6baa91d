# Two commands for a newcomer: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test soak test-fast typecheck bench bench-server bench-cluster node-packages services serve cluster calibrate validate validate-grid validate-cluster sweep-examples notebooks notebooks-clean clean

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
test: $(VENV)/.installed-dev services node-packages typecheck
	PYTHONASYNCIODEBUG=1 CHATLAB_SMALL=1 $(BIN)/python -W error -m pytest -q tests

# mypy over the packages listed in pyproject.toml ([tool.mypy] files).
typecheck: $(VENV)/.installed-dev
	$(BIN)/python -m mypy

# The storm, fault and fuzz tests at full size (tens of minutes): thousands of connections,
# SIGKILLs at many points, at least 10,000 examples per fuzzed endpoint.
soak: $(VENV)/.installed-dev services
	CHATLAB_SOAK=1 $(BIN)/python -W error -m pytest -q -m soak tests

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

# The validation grid (docs/VALIDATION.md, "The grid"): a fresh calibration on this machine,
# then every configuration of data/validation-grid.toml (about 25 min on 2 cores).
validate-grid: $(VENV)/.installed services
	$(BIN)/chatlab calibrate --scale 2 --out data/validation-grid-calibration.toml
	$(BIN)/chatlab validate --grid data/validation-grid.toml --calibration data/validation-grid-calibration.toml --out data

# Only the cluster crash, merged into the committed table and figure.
validate-cluster: $(VENV)/.installed services
	$(BIN)/chatlab validate --transports none --crash-transport none --cluster 4 --repeat 3 --merge --out data

# The example sweeps of docs/SWEEPS.md and their figures in docs/sweeps/ (about 20 min on 2 cores).
# Interrupted? Run it again: --resume finishes each sweep where it stopped.
SWEEPS := out/sweeps
sweep-examples: $(VENV)/.installed
	$(BIN)/chatlab sweep data/sweeps/longpoll_vs_websocket.toml --out $(SWEEPS)/lp-vs-ws --resume
	$(BIN)/chatlab plot $(SWEEPS)/lp-vs-ws --x rtt_ms --y latency_ms_p95 --col msg_rate_per_min --logx --logy \
		--out docs/sweeps/longpoll-vs-websocket --format png
	$(BIN)/chatlab sweep data/sweeps/short_poll_interval.toml --out $(SWEEPS)/poll-interval --resume
	$(BIN)/chatlab plot $(SWEEPS)/poll-interval --x poll_interval_s --y latency_ms_p95 --logx --logy \
		--out docs/sweeps/poll-interval-latency --format png
	$(BIN)/chatlab plot $(SWEEPS)/poll-interval --x poll_interval_s --y requests_per_s --logx --logy \
		--out docs/sweeps/poll-interval-requests --format png
	$(BIN)/chatlab sweep data/sweeps/backoff_storm.toml --out $(SWEEPS)/backoff --resume
	$(BIN)/chatlab plot $(SWEEPS)/backoff --x clients --y time_to_reconnect_all_s --hue reconnect_policy --logx \
		--out docs/sweeps/backoff-time-to-reconnect --format png
	$(BIN)/chatlab plot $(SWEEPS)/backoff --x clients --y reconnect_peak_per_s --hue reconnect_policy --logx --logy \
		--out docs/sweeps/backoff-reconnect-peak --format png
	$(BIN)/chatlab sweep data/sweeps/capacity_msg_rate.toml --out $(SWEEPS)/capacity --resume
	$(BIN)/chatlab plot $(SWEEPS)/capacity --x msg_rate_per_min --y capacity_clients --logx --logy \
		--out docs/sweeps/capacity-vs-message-rate --format png

# The notebooks, executed, as HTML in out/notebooks/ with their figures in out/notebooks/img/
# (SMALL=1 for the quick sizes the tests use). notebooks-clean strips outputs before a commit.
$(VENV)/.installed-notebooks: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev,notebooks]' 2>&1 | grep -v "is ignored: it is neither" || true
	touch $@

notebooks: $(VENV)/.installed-notebooks
	$(BIN)/python tools/render_notebooks.py --out out/notebooks $(if $(SMALL),--small)

notebooks-clean: $(VENV)/.installed-dev
	$(BIN)/python tools/render_notebooks.py --clean

clean:
	rm -rf $(VENV) .pytest_cache out
