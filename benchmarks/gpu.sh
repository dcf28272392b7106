#!/usr/bin/env bash
# One prepared script for a GPU machine: `mecjax reproduce --full` (paper scale, 256 instances
# x 100 slots per cell), then the env (with its Numba columns where numba is installed),
# scheduler and optimizer benchmarks, each under a time limit so the whole script ends within
# about 7.5 minutes. Writes
# results/benchmarks/gpu_*.md (and .json), gpu_log.txt (its output) and
# results/benchmarks/gpu_reproduce_full/.
#
#   bash benchmarks/gpu.sh            # from the repository root, on the GPU machine
#   bash benchmarks/gpu.sh reproduce env   # only these steps (reproduce env schedulers optim)
#
# Where `mecjax` with a GPU JAX is not importable it sets one up: on an offline machine that
# already has CUDA JAX, flax, optax, orbax and scipy, from wheels carried in .whl/ (jraph is
# the usual missing one: `pip download --no-deps -d .whl jraph`); elsewhere, a .venv-gpu with
# `jax[cuda12]` from the package index.
set -uo pipefail
cd "$(dirname "$0")/.."
steps=" ${*:-reproduce env schedulers optim} "
gpu_ready() {  # mecjax and every dependency importable (the checkout alone is on sys.path here)
  python3 -c "import mecjax, jraph, flax, optax, orbax.checkpoint, scipy, matplotlib, jax
assert jax.default_backend() == 'gpu'" 2>/dev/null
}
if ! gpu_ready; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/mecjax-site .whl/*.whl || exit 1
    export PYTHONPATH="$PWD:/tmp/mecjax-site${PYTHONPATH:+:$PYTHONPATH}"
  else
    python3 -m venv .venv-gpu && . .venv-gpu/bin/activate
    pip install --quiet --upgrade pip
    pip install --quiet -e ".[bench]" "jax[cuda12]"   # bench: the Numba columns of bench env
  fi
fi
python3 -c "import jax; print('backend', jax.default_backend(), jax.devices(), 'jax', jax.__version__)"
export PYTHONUNBUFFERED=1
mecjax=(python3 -m mecjax.cli)   # the console script's entry point, also without an install
out=results/benchmarks
exec > >(tee -a "$out/gpu_log.txt") 2>&1   # the whole run's output, kept beside its tables
echo "== bash benchmarks/gpu.sh $* ($(date -u +%FT%TZ))"
tmp=$(mktemp -d)
run() {  # run LIMIT_SECONDS NAME ARGS...: one `mecjax` step under its limit; a timeout is reported
  local limit=$1 name=$2; shift 2
  [[ $steps == *" $name "* ]] || return 0
  echo "== $name (limit ${limit}s)"
  SECONDS=0
  timeout "$limit" "${mecjax[@]}" "$@"; local rc=$?
  echo "== $name: exit $rc after ${SECONDS}s"
}
# Paper scale first: finished cells are kept, so a rerun continues where the limit stopped it.
run 250 reproduce reproduce --full --out "$out/gpu_reproduce_full" \
  --cache "$out/gpu_reproduce_full/cells"
# NumPy, the reference of every ratio, runs on the host: its budgets keep each row to seconds.
run 90 env bench env --ns 150,1000 --batches 1024,8192 --repeats 2 --numpy-budget 3e6 --out "$tmp"
run 50 schedulers bench schedulers --ns 150 --batches 256 --repeats 2 --out "$tmp"
run 60 optim bench optim --ns 150 --batches 1024 --repeats 2 --time-limit 10 --out "$tmp"
for f in "$tmp"/*; do [[ -e $f ]] && cp "$f" "$out/gpu_$(basename "$f")"; done
ls -l "$out"/gpu_*
