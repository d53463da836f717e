# histoclr: `make setup` (once), `make run` (the main job), `make test` (the tests).
# `run` and `test` set the environment up on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
OUT ?= runs/pipeline

.PHONY: setup run test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -e '.[dev]'
	$(BIN)/python -c "import torch, torchvision, segmentation_models_pytorch, openslide, albumentations, mlflow; print('environment ok: torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $@

run: setup
	$(BIN)/python pipelines/run_all.py --config configs/pipeline/cpu.yaml data_root=$(DATA) out_dir=$(OUT)

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check histoclr tests pipelines benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
