# histoclr: `make setup` (once), `make run` (the main job), `make test` (the tests).
# `run` and `test` set the environment up on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
OUT ?=
RUN_ARGS ?=

.PHONY: setup postgres chromium run test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -e '.[dev]'
	$(BIN)/python -c "import torch, torchvision, segmentation_models_pytorch, openslide, albumentations, mlflow; print('environment ok: torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $@

# Without a data root at the default DATA (a fresh clone), or with DATA=demo: the built-in demo on
# synthetic data (configs/pipeline/demo.yaml, a few minutes), said loudly at the start and the end.
run: setup
	$(BIN)/python pipelines/run_all.py --config configs/pipeline/cpu.yaml $(if $(filter file,$(origin DATA)),--demo-if-missing) $(RUN_ARGS) data_root=$(DATA) $(if $(OUT),out_dir=$(OUT))

test: setup postgres chromium
	$(BIN)/python -m pytest -q

# Shell for the Debian packages the integration tests need: SUDO is "" (root), "sudo -n"
# (passwordless sudo) or "no" (apt-get cannot be used here); APT_INSTALL PKG installs quietly.
APT_SUDO = if ! command -v apt-get >/dev/null 2>&1; then SUDO=no; elif [ "$$(id -u)" = 0 ]; then SUDO=; \
	elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=no; fi
APT_INSTALL = $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	--no-install-recommends
CANNOT_INSTALL = not found and cannot install it here (needs apt-get as root or passwordless sudo)

# Debian's PostgreSQL server binaries, for tests/deploy/test_postgres_tracking.py (which runs its own
# throwaway cluster on a free loopback port, never the system one). Installed only when missing and
# apt-get may be used (root or passwordless sudo); otherwise one line, and that test is skipped.
# Never fails. A `main` cluster that the fresh package may have started is stopped again.
postgres:
	@if ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then exit 0; fi; \
	$(APT_SUDO); \
	if [ "$$SUDO" = no ]; then \
	  echo "postgres: PostgreSQL server $(CANNOT_INSTALL); the PostgreSQL integration test will be skipped (install: sudo apt-get install postgresql)"; \
	  exit 0; fi; \
	echo "postgres: installing Debian's postgresql for the PostgreSQL integration test"; \
	if $(APT_INSTALL) postgresql; then \
	  pg_lsclusters -h 2>/dev/null | while read -r ver name port status rest; do \
	    if [ "$$status" = online ]; then $$SUDO pg_ctlcluster "$$ver" "$$name" stop || true; fi; done; \
	else echo "postgres: apt-get install postgresql failed; the PostgreSQL integration test will be skipped"; fi

# Debian's chromium, for the browser test tests/deploy/test_mlflow_ui.py (Playwright drives it through
# executable_path; Playwright's own browser download is not used). Installed only when missing and
# apt-get may be used (root or passwordless sudo); otherwise one line, and that test is skipped. Never fails.
chromium:
	@if [ -x /usr/bin/chromium ]; then exit 0; fi; \
	$(APT_SUDO); \
	if [ "$$SUDO" = no ]; then \
	  echo "chromium: Debian's chromium $(CANNOT_INSTALL); the MLflow UI browser test will be skipped (install: sudo apt-get install chromium)"; \
	  exit 0; fi; \
	echo "chromium: installing Debian's chromium for the MLflow UI browser test"; \
	$(APT_INSTALL) chromium || echo "chromium: apt-get install chromium failed; the MLflow UI browser test will be skipped"

lint: setup
	$(BIN)/ruff check histoclr tests pipelines benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
