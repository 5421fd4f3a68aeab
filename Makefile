# Two entry points: `make demo` (the main job on the embedded default) and `make test`.
# Both create .venv in the repo and install CPU torch first so pip never pulls a CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-all clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/genbound demo --out demo_out

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m '' tests

clean:
	rm -rf $(VENV) demo_out .pytest_cache
