#!/usr/bin/env bash
# The GPU measurements of docs/performance.md in one run (device machine).
#
#   bash benchmarks/gpu_suite.sh            # paper scale (256², batch 32), ~9 min
#   PARTS="profile ablate" bash benchmarks/gpu_suite.sh   # where the step's time goes, ~8 min
#   PARTS="profile ablate" PROFILE_DTYPES=bfloat16 ABLATE_VARIANTS=thin_patches,thin_padded \
#     ABLATE_FLOAT32=0 bash benchmarks/gpu_suite.sh   # the thin layer's forms only, ~4 min
#   BASE=.gpu/base bash benchmarks/gpu_suite.sh   # also an older tree's step
#   FULL=1 bash benchmarks/gpu_suite.sh     # also every size, the grid, latency
# PARTS picks the parts, in this order: conv (bf16_conv.py), ceilings, step
# (training step and evaluate, float32 and bfloat16, with their cost),
# pipeline (input_pipeline.py), profile (profile_step.py, with the optimized
# HLO in $OUT/hlo), ablate (ablate_step.py, bfloat16, and the thin layer's
# forms in float32), batches (the step at each of BATCHES), e2e, e2e64 (the
# 64² recipe end to end with the card's clocks); the default is every part
# but ablate and e2e64.
#   EXTRA="--image_size=32 --grid=4 --iters=1 --repeats=1 --channels=8" \
#     BATCHES="4" CONV_EXTRA="--size=32 --batch=4 --iters=2" \
#     PROFILE_EXTRA="--image_size=32 --batch=2 --channels=8 --steps=1" \
#     CEILINGS_EXTRA=--quick PIPELINE_EXTRA="--batches=5 --repeats=1" \
#     ABLATE_EXTRA="--image_size=32 --batch=2 --channels=8 --iters=1 --rounds=1" \
#     RECIPE=experiments/configs/pretrained_dc_tv_256.py:quick E2E_STEPS=4 \
#     RECIPE64=experiments/configs/pretrained_dc_tv.py:quick E2E64_STEPS=4 \
#     PARTS="conv ceilings step pipeline profile ablate batches e2e e2e64" \
#     bash benchmarks/gpu_suite.sh              # a dry run on a CPU
# BASE names a folder holding an older tree's hyperrecon_jax (e.g. `git
# archive <commit> hyperrecon_jax | tar -x -C .gpu/base`), from c3aa334
# (2026-12-04) on: the same training step is timed with that library on the
# same card, lines tagged "base" (their "commit" is this tree's, the script's).
# Results: one JSON line per measurement in $OUT/throughput.jsonl, written as
# each is made. A part that fails is named at the end, and the suite then exits
# with status 1 (the other parts still run).
set -uo pipefail
OUT=${OUT:-/tmp/hyperrecon_bench}
mkdir -p "$OUT"
EXTRA=${EXTRA:-}
BATCHES=${BATCHES-"128"}  # BATCHES="" leaves the scaling out
PARTS=" ${PARTS:-conv ceilings step pipeline profile batches e2e} "
part() { [[ "$PARTS" == *" $1 "* ]]; }
export PYTHONUNBUFFERED=1
ROOT="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH="$ROOT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
start=$SECONDS
FAILED=()
# measure <what> <command...>: its JSON lines to throughput.jsonl (and the
# console), its messages to stderr.log; a nonzero status is recorded.
measure() {
  local what=$1 status
  shift
  "$@" 2>>"$OUT/stderr.log" | tee -a "$OUT/throughput.jsonl"
  status=${PIPESTATUS[0]}
  if [ "$status" != 0 ]; then
    FAILED+=("$what (status $status)")
    echo "error: $what failed with status $status ($((SECONDS - start)) s)" | tee -a "$OUT/stderr.log" >&2
  fi
}
run() {
  echo "+ throughput.py $* ($((SECONDS - start)) s)" >>"$OUT/stderr.log"
  measure "throughput.py $*" python3 benchmarks/throughput.py "$@" $EXTRA
}
# A recipe brings its own model and sizes: throughput.py refuses those flags
# beside --recipe, so EXTRA's are left out of its runs.
run_recipe() {
  local a kept=()
  for a in $EXTRA; do
    case "$a" in --image_size=*|--channels=*|--batch=*|--sizes=*|--dtype=*|--strategy=*) ;;
      *) kept+=("$a") ;; esac
  done
  echo "+ throughput.py $* ${kept[*]} ($((SECONDS - start)) s)" >>"$OUT/stderr.log"
  measure "throughput.py $*" python3 benchmarks/throughput.py "$@" "${kept[@]}"
}
# One convolution, float32 against two bfloat16 formulations (seconds): does
# a float32 result before the cast cost the bfloat16 speed-up?
part conv && measure bf16_conv.py python3 benchmarks/bf16_conv.py ${CONV_EXTRA:-}
# The card's ceilings (matrix product, the Unet's convolution, memory
# bandwidth) and, against them, the work per sample or pair of the training
# step and of the path evaluate.py runs (grid_metrics, λ-major), float32 and
# bfloat16 activations: the roofline of items 3 and 4.
part ceilings && measure ceilings.py python3 benchmarks/ceilings.py ${CEILINGS_EXTRA:-}
part step && run --sizes=L --benchmarks=train_step,evaluate --order=lambda --dtype=float32 \
  --dtype=bfloat16 --cost
# The same training step with the older library (same script, same card).
if [ -n "${BASE:-}" ] && { ! grep -q "def default_evals" "$BASE/hyperrecon_jax/train/configuration.py" 2>/dev/null \
    || grep -rqs "import dm_pix" "$BASE/hyperrecon_jax"; }; then
  # throughput.py builds its configs from today's configs/default.py, which
  # needs the library's default_evals (87dcfef on), and the card's image has
  # no dm-pix, which the library imported before c3aa334 (2026-12-04).
  echo "BASE=$BASE: no hyperrecon_jax from c3aa334 (2026-12-04) or later there; skipping the base step" \
    | tee -a "$OUT/stderr.log" >&2
elif [ -n "${BASE:-}" ]; then
  # From / so that the current folder's package does not shadow the base's.
  (cd / && PYTHONPATH="$OLDPWD/$BASE:$ROOT" python3 -c \
    "import hyperrecon_jax; print('base library:', hyperrecon_jax.__file__)")
  PYTHONPATH="$PWD/$BASE:$ROOT" run --sizes=L --benchmarks=train_step \
    --dtype=float32 --dtype=bfloat16 --tag=base
fi
# The host's side of end-to-end training: training images per second the
# input pipeline delivers (the 256×256 recipe's batches of 32; it builds the
# embedded dataset at 256×256 on first use).
part pipeline && measure input_pipeline.py env \
  HYPERRECON_DATA_DIR="${HYPERRECON_DATA_DIR:-$PWD/.gpu/data}" python3 \
  benchmarks/input_pipeline.py --threads=0 --threads=2 --threads=8 ${PIPELINE_EXTRA:-}
# Where the step's device time goes: every kernel traced (no command buffers),
# each top operation named by its layer, the optimized programs in $OUT/hlo.
if part profile; then
  echo "+ profile_step.py ($((SECONDS - start)) s)" >>"$OUT/stderr.log"
  dtypes=(); for d in ${PROFILE_DTYPES:-float32 bfloat16}; do dtypes+=(--dtype="$d"); done
  measure profile_step.py python3 benchmarks/profile_step.py --sizes=L "${dtypes[@]}" \
    --hlo_dir="$OUT/hlo" ${PROFILE_EXTRA:-}
  gzip -f "$OUT"/hlo/*.txt 2>/dev/null
fi
# What each part of the bfloat16 step costs, and the first layer's grouped
# convolution (2 channels per group) against a batched product of patches and
# against the same convolution padded to 8 channels per group.
if part ablate; then
  echo "+ ablate_step.py ($((SECONDS - start)) s)" >>"$OUT/stderr.log"
  measure "ablate_step.py bfloat16" python3 benchmarks/ablate_step.py --sizes=L \
    --dtype=bfloat16 --iters=10 --rounds=8 \
    --variants="${ABLATE_VARIANTS:-thin_patches,thin_padded,shared_weights,no_batchnorm,no_ssim,nearest_upsample}" \
    ${ABLATE_EXTRA:-}
  # The float32 step (the default) spent 18.5 of its 31.6 traced ms in kernel
  # gradients, one of them 8.75 ms: the thin layer's forms in float32 too.
  [ "${ABLATE_FLOAT32:-1}" = 1 ] && measure "ablate_step.py float32" python3 \
    benchmarks/ablate_step.py --sizes=L --dtype=float32 --iters=10 --rounds=8 \
    --variants=thin_patches,thin_padded ${ABLATE_EXTRA:-}
fi
# Batch scaling of the training step (an out-of-memory batch prints an error).
if part batches; then
  for b in $BATCHES; do
    run --sizes=L --benchmarks=train_step --batch="$b" --dtype=bfloat16
  done
fi
# train_alone <name> <config> <steps> [flags...]: experiments/train.py alone,
# logging every 250 steps, validating and checkpointing only at the end; its
# metrics.jsonl back as $OUT/<name>_metrics.jsonl.
train_alone() {
  local name=$1 config=$2 steps=$3 dir status
  shift 3
  dir=$(mktemp -d)
  echo "+ train.py $config, $steps steps ($((SECONDS - start)) s)" >>"$OUT/stderr.log"
  HYPERRECON_DATA_DIR=${HYPERRECON_DATA_DIR:-$PWD/.gpu/data} python3 experiments/train.py \
    --config="$config" "$@" --workdir="$dir/run" --config.train.num_steps="$steps" \
    --config.train.log_every=250 --config.train.eval_every=1000000 \
    --config.train.checkpoint_every=1000000 >>"$OUT/stderr.log" 2>&1
  status=$?
  # What it logged, also from a run that failed part of the way.
  cp "$dir/run/metrics.jsonl" "$OUT/${name}_metrics.jsonl" 2>/dev/null
  if [ "$status" != 0 ]; then
    FAILED+=("train.py $name (status $status)")
    echo "error: train.py $name failed with status $status ($((SECONDS - start)) s)" \
      | tee -a "$OUT/stderr.log" >&2
  fi
  rm -rf "$dir"
}
# End to end: the 256×256 recipe with HyperRecon-L's hypernetwork (d = 128),
# its training step alone, then experiments/train.py alone on the card for
# E2E_STEPS steps (1,500; 0 leaves this out), logging every 250 steps and
# validating only at the end: steps/s along the run in $OUT/e2e_metrics.jsonl,
# to hold against the step alone (its line is tagged e2e).
E2E_STEPS=${E2E_STEPS:-1500}
if part e2e && [ "$E2E_STEPS" != 0 ]; then
  RECIPE=${RECIPE:-experiments/configs/pretrained_dc_tv_256.py}
  run_recipe --recipe="$RECIPE" --recipe.model.hyper_dim=128 --benchmarks=train_step --tag=e2e
  train_alone e2e "$RECIPE" "$E2E_STEPS" --config.model.hyper_dim=128
fi
# The faster first 1,000 steps at 64×64 (134–152, then 77–94 steps/s, one H100,
# 2026-11-26), where the host sets the pace: the shipped 64² recipe alone for
# E2E64_STEPS steps with `input_wait` (the loop's share of wall time spent
# waiting for its batch) in $OUT/e2e64_metrics.jsonl, and the card's clocks,
# power and load twice a second beside it ($OUT/e2e64_clocks.csv).
if part e2e64; then
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu \
    --format=csv -lms 500 >"$OUT/e2e64_clocks.csv" 2>/dev/null &
  smi=$!
  train_alone e2e64 "${RECIPE64:-experiments/configs/pretrained_dc_tv.py}" "${E2E64_STEPS:-3000}"
  kill "$smi" 2>/dev/null
fi
if [ "${FULL:-0}" = 1 ]; then
  run --sizes=unet --benchmarks=train_step,evaluate --order=lambda --dtype=float32 --dtype=bfloat16
  run --sizes=L --benchmarks=evaluate --order=slice
  run --sizes=unet,S,M,L --benchmarks=train_step,grid,latency
  run --sizes=stack5 --benchmarks=train_step   # per-λ baselines in one program
  for b in 128 256 512; do  # device memory of the compiled step (nothing runs)
    run --sizes=S,M,L --benchmarks=memory --batch="$b" --dtype=float32 --dtype=bfloat16
  done
fi
echo "suite: $((SECONDS - start)) s" | tee -a "$OUT/stderr.log"
tail -n 5 "$OUT/stderr.log"
if [ "${#FAILED[@]}" != 0 ]; then
  for f in "${FAILED[@]}"; do echo "error: failed: $f (see $OUT/stderr.log)" >&2; done
  exit 1
fi
