#!/usr/bin/env bash
# Every GPU measurement of docs/performance.md in one run (device machine).
#
#   bash benchmarks/gpu_suite.sh            # paper scale
#   EXTRA="--image_size=32 --batch=4 --grid=4 --iters=1 --repeats=1" \
#     bash benchmarks/gpu_suite.sh          # a dry run on a CPU
# Results: one JSON line per measurement in $OUT/throughput.jsonl.
set -uo pipefail
OUT=${OUT:-/tmp/hyperrecon_bench}
mkdir -p "$OUT"
EXTRA=${EXTRA:-}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
run() { python3 benchmarks/throughput.py "$@" $EXTRA 2>>"$OUT/stderr.log" | tee -a "$OUT/throughput.jsonl"; }
run --sizes=unet,S,M,L
run --sizes=L --dtype=bfloat16 --benchmarks=train_step,grid
run --sizes=unet --dtype=bfloat16 --benchmarks=train_step,grid
run --sizes=stack5 --benchmarks=train_step   # per-λ baselines in one program
# The evaluation path (grid_metrics: 32 slices x 100 λ), λ-major against slice-major.
run --sizes=L,unet --benchmarks=evaluate --order=lambda
run --sizes=L --benchmarks=evaluate --order=slice
tail -n 5 "$OUT/stderr.log"
