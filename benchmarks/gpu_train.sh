#!/usr/bin/env bash
# Trains the shipped model on one GPU (device machine), with its controls, and
# evaluates them: docs/results.md "Trained on a GPU".
#
#   bash benchmarks/gpu_train.sh                     # the full run, ~6 min
#   VARIANT=:quick BUDGET=120 bash benchmarks/gpu_train.sh   # a dry run on a CPU
#
# Three programs share the GPU: HyperRecon with half of the λ at the ends
# (the shipped recipe), the same with uniform λ (the paper's), and the five
# per-λ Unets in one program. BUDGET seconds stop a run that is slower than
# expected (SIGTERM: the loop saves a checkpoint at the step it reached).
# Everything but the checkpoints comes back in $OUT/results.tgz.
set -uo pipefail
OUT=${OUT:-/tmp/hyperrecon_gpu_out}
W=${W:-/tmp/hyperrecon_gpu_work}
BUDGET=${BUDGET:-270}
CONFIG=experiments/configs/pretrained_dc_tv.py${VARIANT:-}
mkdir -p "$OUT" "$W"
# A rerun on a warm machine resumes the runs; the exports are made afresh.
rm -rf "$W/export" "$W/export_uniform"; mkdir -p "$W/export"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HYPERRECON_DATA_DIR=${HYPERRECON_DATA_DIR:-$PWD/.gpu/data}
# Three processes on one card: each takes a quarter of its memory.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.25}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
start=$SECONDS
timeout -k 30 "$BUDGET" python3 experiments/train.py --config="$CONFIG" \
  --workdir="$W/endpoints" >"$W/endpoints.log" 2>&1 &
RUNS=endpoints
if [ "${UNIFORM:-1}" = 1 ]; then
  RUNS="endpoints uniform"
  timeout -k 30 "$BUDGET" python3 experiments/train.py --config="$CONFIG" \
    --config.hparams.sampler=uniform --workdir="$W/uniform" >"$W/uniform.log" 2>&1 &
fi
# The baselines have no resumable stop on a signal: give them steps that fit.
timeout -k 30 "$BUDGET" python3 experiments/baselines.py --config="$CONFIG" \
  ${BASELINE_STEPS:+--config.train.num_steps=$BASELINE_STEPS} \
  --workdir="$W/baselines" --lambdas=0,0.25,0.5,0.75,1 >"$W/baselines.log" 2>&1 &
wait
echo "training: $((SECONDS - start)) s"
tail -n 4 "$W"/*.log
# Without finished baselines (the budget ran out) evaluate without them.
B=(); [ -f "$W/baselines/baselines.json" ] && B=(--baselines="$W/baselines")
for run in $RUNS; do
  python3 experiments/evaluate.py --workdir="$W/$run" "${B[@]}" \
    >"$W/evaluate_$run.log" 2>&1
  tail -n 12 "$W/evaluate_$run.log"
done
echo "evaluation: $((SECONDS - start)) s"
python3 experiments/export_pretrained.py --workdir="$W/endpoints" \
  --name=mni152_csmri8x_dc_tv "${B[@]}" --folder="$W/export" \
  --description="${DESCRIPTION:-GPU run of experiments/configs/pretrained_dc_tv.py}" \
  >"$W/export.log" 2>&1
tail -n 5 "$W/export.log"
[ "${UNIFORM:-1}" = 1 ] && mkdir -p "$W/export_uniform" &&
python3 experiments/export_pretrained.py --workdir="$W/uniform" \
  --name=mni152_csmri8x_dc_tv_uniform "${B[@]}" --folder="$W/export_uniform" \
  --description="The uniform-lambda control of the run above" \
  >"$W/export_uniform.log" 2>&1
tail -n 1 "$W/export_uniform.log"
echo "total: $((SECONDS - start)) s"
tar czf "$OUT/results.tgz" -C "$W" --exclude=checkpoints --exclude='*.lock' .
ls -la "$OUT"
