#!/usr/bin/env bash
# The GPU measurements of docs/performance.md in one run (device machine).
#
#   bash benchmarks/gpu_suite.sh            # paper scale (256², batch 32), ~3 min
#   FULL=1 bash benchmarks/gpu_suite.sh     # also every size, the grid, latency
#   EXTRA="--image_size=32 --grid=4 --iters=1 --repeats=1 --channels=8" \
#     BATCHES="2 4" CONV_EXTRA="--size=32 --batch=4 --iters=2" \
#     bash benchmarks/gpu_suite.sh              # a dry run on a CPU
# Results: one JSON line per measurement in $OUT/throughput.jsonl.
set -uo pipefail
OUT=${OUT:-/tmp/hyperrecon_bench}
mkdir -p "$OUT"
EXTRA=${EXTRA:-}
BATCHES=${BATCHES-"64 128"}  # BATCHES="" leaves the scaling out
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
run() {
  echo "+ throughput.py $*" >>"$OUT/stderr.log"
  python3 benchmarks/throughput.py "$@" $EXTRA 2>>"$OUT/stderr.log" | tee -a "$OUT/throughput.jsonl"
}
# One convolution, float32 against two bfloat16 formulations (seconds): does
# a float32 result before the cast cost the bfloat16 speed-up?
python3 benchmarks/bf16_conv.py ${CONV_EXTRA:-} 2>>"$OUT/stderr.log" | tee -a "$OUT/throughput.jsonl"
# float32 against bfloat16 activations: the training step, and the path
# evaluate.py runs (grid_metrics, λ-major).
run --sizes=L,unet --benchmarks=train_step,evaluate --order=lambda
run --sizes=L,unet --benchmarks=train_step,evaluate --order=lambda --dtype=bfloat16
# λ-major against slice-major evaluation.
run --sizes=L --benchmarks=evaluate --order=slice
# Batch scaling of the training step (an out-of-memory batch prints an error).
for b in $BATCHES; do
  run --sizes=L --benchmarks=train_step --batch="$b"
  run --sizes=L --benchmarks=train_step --batch="$b" --dtype=bfloat16
done
if [ "${FULL:-0}" = 1 ]; then
  run --sizes=unet,S,M,L --benchmarks=train_step,grid,latency
  run --sizes=stack5 --benchmarks=train_step   # per-λ baselines in one program
fi
tail -n 5 "$OUT/stderr.log"
