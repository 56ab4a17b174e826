#!/usr/bin/env bash
# Every CUDA check and bench in one go, on a machine with a GPU (bench/README.md, "On a GPU"): the CUDA
# tests (tests/test_cuda.py: each model, regularizer and optimizer family against its CPU run, hypergradients
# against finite differences on the GPU), then the fixed / λOpt epoch, full-ranking evaluation, deep-MF
# convergence and ML-100K / ML-1M / ML-10M-shaped scaling benches with --device cuda.
#
#   bash bench/cuda.sh [LOG]        # from the repository root; prints everything and writes it to LOG too
#
# PYTHON picks the interpreter (default: python); DEVICE the device (default: cuda); SIZES the scale bench's
# sizes (default: all three). Each step has its own time limit, so one that hangs or fails leaves the others'
# numbers; the script exits non-zero if any step failed.
set -u
log=${1:-cuda-bench.log}
py=${PYTHON:-python}
device=${DEVICE:-cuda}
sizes=${SIZES:-ml-100k ml-1m ml-10m}
failed=0

step() {  # step SECONDS COMMAND...: run it under a time limit, say how it ended and how long it took
  local limit=$1 started=$SECONDS
  shift
  echo "== $* (limit ${limit} s)"
  timeout "$limit" "$@"
  local rc=$?
  echo "== exit $rc after $((SECONDS - started)) s"
  [ "$rc" = 0 ] || failed=1
}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null
  "$py" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'available', torch.cuda.is_available())"
  step 150 "$py" -m pytest -q -p no:cacheprovider -n 2 tests/test_cuda.py tests/test_deep.py -k "cuda or gpu"
  step 75 "$py" bench/lambdaopt_epoch.py --device "$device" --epochs 5
  step 45 "$py" bench/ranking_eval.py --device "$device"
  step 60 "$py" bench/deep_mf_convergence.py --device "$device"
  # shellcheck disable=SC2086  # the sizes are separate arguments
  step 420 "$py" bench/scale.py --device "$device" --sizes $sizes
  exit $failed
} 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
