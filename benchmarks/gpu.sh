#!/usr/bin/env bash
# One prepared script for a lent GPU machine: the env, optimizer and scheduler benchmarks,
# then `mecjax reproduce --full` (paper scale, 256 instances x 100 slots per cell), each under
# a time limit so the whole script ends within about 8 minutes. Writes
# results/benchmarks/gpu_*.md (and .json) and results/benchmarks/gpu_reproduce_full/.
#
#   bash benchmarks/gpu.sh            # from the repository root, on the GPU machine
#
# It installs mecjax with CUDA JAX into .venv-gpu first if `mecjax` is not importable.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import mecjax, jax; assert jax.default_backend() == 'gpu'" 2>/dev/null; then
  python3 -m venv .venv-gpu && . .venv-gpu/bin/activate
  pip install --quiet --upgrade pip
  pip install --quiet -e . "jax[cuda12]"
fi
python -c "import jax; print('backend', jax.default_backend(), jax.devices())"
out=results/benchmarks
tmp=$(mktemp -d)
run() {  # run LIMIT_SECONDS NAME COMMAND...: one step under its limit; a timeout is reported
  local limit=$1 name=$2; shift 2
  echo "== $name (limit ${limit}s)"
  SECONDS=0
  timeout "$limit" "$@"; local rc=$?
  echo "== $name: exit $rc after ${SECONDS}s"
}
run 100 env mecjax bench env --ns 150,1000,10000 --batches 1024,8192 --repeats 3 --out "$tmp"
run 100 optim mecjax bench optim --ns 150,1000 --batches 1024,8192 --repeats 2 --time-limit 20 \
  --out "$tmp"
run 100 schedulers mecjax bench schedulers --ns 150 --batches 256 --repeats 2 --out "$tmp"
for f in "$tmp"/*; do cp "$f" "$out/gpu_$(basename "$f")"; done
# Paper scale; finished cells are kept, so a rerun continues where the limit stopped it.
run 200 reproduce-full mecjax reproduce --full --out "$out/gpu_reproduce_full" \
  --cache "$out/gpu_reproduce_full/cells"
ls -l "$out"/gpu_* 
