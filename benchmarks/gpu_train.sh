#!/usr/bin/env bash
# Trains the shipped model on one GPU (device machine), with its controls, and
# evaluates them: docs/results.md "Trained on a GPU".
#
#   bash benchmarks/gpu_train.sh                     # the full run, ~6 min
#   STEPS=10000 UNIFORM=0 BF16=1 STEPS_128=8000 bash benchmarks/gpu_train.sh
#   VARIANT=:quick BUDGET=120 STEPS_128=4 bash benchmarks/gpu_train.sh  # dry run, CPU
#
# Up to six programs share the GPU: HyperRecon with half of the λ at the ends
# (the shipped recipe), the same with uniform λ (the paper's; UNIFORM=0 leaves
# it out), the shipped recipe with bfloat16 activations (BF16=1), the five
# per-λ Unets in one program, and with STEPS_128 set the shipped recipe at
# 128×128 in float32 and with bfloat16 activations, for that many steps (the
# bfloat16 accuracy check at a second size). STEPS sets the 64×64 programs'
# number of steps (the config's otherwise). BUDGET seconds stop a run that is
# slower than expected (SIGTERM: the loop saves a checkpoint at the step it
# reached). Everything but the checkpoints comes back in $OUT/results.tgz.
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
# Up to seven processes on one card (six trainers, or four evaluations, an
# export and two accuracy checks): each takes an eighth of its memory.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.12}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
STEPS_FLAG=(); [ -n "${STEPS:-}" ] && STEPS_FLAG=(--config.train.num_steps="$STEPS")
start=$SECONDS
train() {  # train <run name> [flags...]
  local run=$1; shift
  timeout -k 30 "$BUDGET" python3 experiments/train.py --config="$CONFIG" \
    "${STEPS_FLAG[@]}" "$@" --workdir="$W/$run" >"$W/$run.log" 2>&1 &
  RUNS="$RUNS $run"
}
RUNS=""
train endpoints
[ "${UNIFORM:-1}" = 1 ] && train uniform --config.hparams.sampler=uniform
[ "${BF16:-0}" = 1 ] && train endpoints_bf16 --config.model.dtype=bfloat16
if [ -n "${STEPS_128:-}" ]; then
  train r128 --config.data.image_size=128 --config.train.num_steps="$STEPS_128"
  train r128_bf16 --config.data.image_size=128 --config.train.num_steps="$STEPS_128" \
    --config.model.dtype=bfloat16
fi
# The baselines have no resumable stop on a signal: give them steps that fit.
timeout -k 30 "$BUDGET" python3 experiments/baselines.py --config="$CONFIG" \
  "${STEPS_FLAG[@]}" ${BASELINE_STEPS:+--config.train.num_steps=$BASELINE_STEPS} \
  --workdir="$W/baselines" --lambdas=0,0.25,0.5,0.75,1 >"$W/baselines.log" 2>&1 &
wait
echo "training: $((SECONDS - start)) s"
tail -n 4 "$W"/*.log
# End-to-end speed of each program: steps/s over its logging intervals.
for run in $RUNS baselines; do
  python3 - "$W/$run/metrics.jsonl" <<'PY'
import json, statistics, sys
rates = [r["steps_per_s"] for r in map(json.loads, open(sys.argv[1]))
         if "steps_per_s" in r][1:]  # the first interval holds the compilation
if rates:
  print(f"{sys.argv[1]}: steps/s median {statistics.median(rates):.1f}, "
        f"max {max(rates):.1f} over {len(rates)} intervals")
PY
done
# Without finished baselines (the budget ran out) evaluate without them.
B=(); E=()
if [ -f "$W/baselines/baselines.json" ]; then
  B=(--baselines="$W/baselines"); E=(--config.evals.baselines.workdir="$W/baselines")
fi
# Side by side: each is mostly start-up and compilation.
for run in $RUNS; do
  case $run in r128*) with=();; *) with=("${E[@]}");; esac  # the Unets are 64×64
  python3 experiments/evaluate.py --workdir="$W/$run" "${with[@]}" \
    >"$W/evaluate_$run.log" 2>&1 &
done
# The step the shipped run reached (a time budget may have stopped it early).
last_step=$(ls "$W/endpoints/checkpoints" 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -n 1)
python3 experiments/export_pretrained.py --workdir="$W/endpoints" \
  --name=mni152_csmri8x_dc_tv "${B[@]}" --folder="$W/export" \
  --description="${DESCRIPTION:-GPU run of experiments/configs/pretrained_dc_tv.py}, ${last_step:-?} steps" \
  >"$W/export.log" 2>&1 &
if [ "${UNIFORM:-1}" = 1 ]; then
  mkdir -p "$W/export_uniform"
  python3 experiments/export_pretrained.py --workdir="$W/uniform" \
    --name=mni152_csmri8x_dc_tv_uniform "${B[@]}" --folder="$W/export_uniform" \
    --description="The uniform-lambda control of the run above" \
    >"$W/export_uniform.log" 2>&1 &
fi
# Trained float32 weights evaluated with bfloat16 activations (docs/performance.md).
for run in endpoints ${STEPS_128:+r128}; do
  python3 benchmarks/bf16_accuracy.py --workdir="$W/$run" 2>"$W/bf16_accuracy_$run.err" \
    >"$W/bf16_accuracy_$run.jsonl" &
done
wait
for run in $RUNS; do tail -n 12 "$W/evaluate_$run.log"; done
tail -n 5 "$W"/export*.log
cat "$W"/bf16_accuracy_*.jsonl
echo "total: $((SECONDS - start)) s"
tar czf "$OUT/results.tgz" -C "$W" --exclude=checkpoints --exclude='*.lock' .
ls -la "$OUT"
