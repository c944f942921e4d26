#!/usr/bin/env bash
# Trains a shipped model's recipe on one GPU (device machine), with its
# controls and per-λ Unets, evaluates them and exports the model:
# docs/results.md "The 64×64 shipped model, trained on a GPU" and "The 256×256 shipped model".
#
#   bash benchmarks/gpu_train.sh                     # the 64×64 model, ~6 min
#   STEPS=10000 UNIFORM=0 BF16=1 STEPS_128=8000 bash benchmarks/gpu_train.sh
#   CONFIG=experiments/configs/pretrained_dc_tv_256.py NAME=mni152_csmri8x_dc_tv_256 \
#     SCALES=measure UNIFORM=0 BASELINE_STEPS=1500 BUDGET=280 bash benchmarks/gpu_train.sh  # 256²
#   VARIANT=:quick BUDGET=120 STEPS_128=4 bash benchmarks/gpu_train.sh  # dry run, CPU
#   CONFIG=experiments/configs/pretrained_dc_tv_256.py SCALES=measure SCALE_STEPS=4 STEPS=4 \
#     UNIFORM=0 BASELINE_STEPS=4 EXTRA="--config.model.channels=4 --config.model.hyper_dim=4
#     --config.train.batch_size=2" bash benchmarks/gpu_train.sh
#     # dry run of the 256×256 recipe, CPU (minutes; add FIG6=1 TOP_B=1 for Fig. 6)
#   CONFIG=experiments/configs/pretrained_dc_tv_256.py SCALES=measure MAIN=0 UNIFORM=0 FIG6=1 \
#     STEPS=6000 BUDGET=300 bash benchmarks/gpu_train.sh  # Fig. 6 alone at 256²
#
# SCALES=measure first trains the one-hot Unets for SCALE_STEPS (500) steps
# and trains everything else with their validation losses as the loss scales
# (the paper's α_k = 1/s_k, `experiments/baselines.py` without --lambdas),
# within SCALE_BUDGET seconds (BUDGET's by default; they must finish, as all
# that follows needs them); the recipe's own scales are otherwise used (they
# were measured at its size).
# Up to six programs then share the GPU: HyperRecon with half of the λ at the
# ends (the shipped recipe), the same with uniform λ (the paper's; UNIFORM=0
# leaves it out), the shipped recipe with bfloat16 activations (BF16=1), the
# per-λ Unets (LAMBDAS, five by default) in one program, and with STEPS_128
# set the recipe at 128×128 in float32 and with bfloat16 activations, for that
# many steps (the bfloat16 accuracy check at a second size). STEPS sets the
# recipe programs' number of steps (the config's otherwise), BASELINE_STEPS
# the Unets'. BUDGET seconds stop a run that is slower than expected (SIGTERM:
# the loop saves a checkpoint at the step it reached). EXTRA flags go to every
# program. FIG6=1 (with SCALES=measure, for a DC + TV recipe) adds the paper's
# Fig. 6: the loss DC + weight-ℓ1 + TV (two hyperparameters) trained with UHS
# and with DHS (the TOP_B = 8 samples of lowest DC), each evaluated on an
# 11×11 λ grid; the one-hot Unets then include weight-ℓ1's, and the recipe
# keeps the DC and TV scales of the same Unets. MAIN=0 (with FIG6=1) trains
# Fig. 6's two programs alone: no recipe run, no per-λ Unets, no export.
# The model is exported as NAME with float16 weights. Back in $OUT:
# results.tgz (everything but checkpoints and the export; rewritten after each
# phase and when the script is stopped, so a run cut short still brings back
# its logs and metrics) and export.tgz (the model's folder, to copy into
# hyperrecon_jax/pretrained/). A program that failed (not one that BUDGET
# stopped) is named at the end, and the script then exits with status 1.
set -uo pipefail
OUT=${OUT:-/tmp/hyperrecon_gpu_out}
W=${W:-/tmp/hyperrecon_gpu_work}
BUDGET=${BUDGET:-270}
CONFIG=${CONFIG:-experiments/configs/pretrained_dc_tv.py}${VARIANT:-}
NAME=${NAME:-mni152_csmri8x_dc_tv}
LAMBDAS=${LAMBDAS:-0,0.25,0.5,0.75,1}
read -r -a EXTRA_FLAGS <<<"${EXTRA:-}"
mkdir -p "$OUT" "$W"
# A rerun on a warm machine resumes the runs; the exports are made afresh.
rm -rf "$W/export" "$W/export_uniform"; mkdir -p "$W/export"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HYPERRECON_DATA_DIR=${HYPERRECON_DATA_DIR:-$PWD/.gpu/data}
# Up to seven programs on one card, of different sizes (the Unets of a 256×256
# recipe need five times a HyperRecon's memory): each takes what it uses.
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
FAILED=()
declare -A PIDS=()  # program name -> pid; a `timeout` leads a process group of its own
save() {  # results.tgz of what there is so far, replaced whole
  tar czf "$OUT/results.tgz.part" -C "$W" --exclude=checkpoints --exclude='*.lock' \
    --exclude=export --exclude=export_uniform . 2>/dev/null \
    && mv "$OUT/results.tgz.part" "$OUT/results.tgz"
}
# On any exit: stop the programs still running (their process groups), save,
# and save again once they have stopped (a training run saves a checkpoint and
# its last metrics first; `timeout -k 30` ends any that does not stop).
finish() {
  local status=$? pid
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" "$pid" 2>/dev/null; done
  save
  if [ "${#PIDS[@]}" != 0 ]; then wait; save; fi
  exit "$status"
}
trap finish EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
# started <name>: records the program just started in the background.
started() { PIDS[$1]=$!; }
# waited <name> [budget]: waits for it; a failure is recorded (with budget, the
# status 124 of a program that BUDGET stopped is not one).
waited() {
  local status
  wait "${PIDS[$1]}"
  status=$?
  unset "PIDS[$1]"
  if [ "$status" = 124 ] && [ -n "${2:-}" ]; then
    echo "$1: stopped by BUDGET ($BUDGET s)"
  elif [ "$status" != 0 ]; then
    FAILED+=("$1 (status $status)")
    echo "error: $1 failed with status $status" >&2
  fi
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
start=$SECONDS
RECIPE=()  # the recipe's programs': its loss scales where they were measured
FIG6_TERMS=(--config.losses='("dc","weight_l1","tv")' --config.hparams.fixed="(0.5,0.5)")
if [ "${FIG6:-0}" = 1 ] && [ "${SCALES:-}" != measure ]; then
  echo "FIG6=1 needs SCALES=measure (the weight-ℓ1 scale at the recipe's size)"; exit 2
fi
MAIN=${MAIN:-1}
if [ "$MAIN" = 0 ] && [ "${FIG6:-0}" != 1 ]; then
  echo "MAIN=0 needs FIG6=1 (otherwise nothing is trained)"; exit 2
fi
if [ "${SCALES:-}" = measure ]; then
  ones=$(python3 - "$CONFIG" "${FIG6:-0}" <<'PY'
import importlib.util, sys
path, _, arg = sys.argv[1].partition(":")
spec = importlib.util.spec_from_file_location("recipe", path)
recipe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe)
terms = 3 if sys.argv[2] == "1" else len(recipe.get_config(arg or None).losses)
print("(" + ", ".join("1.0" for _ in range(terms)) + ")")
PY
)
  with=(); [ "${FIG6:-0}" = 1 ] && with=("${FIG6_TERMS[@]}")
  timeout -k 30 "${SCALE_BUDGET:-$BUDGET}" python3 experiments/baselines.py --config="$CONFIG" \
    "${EXTRA_FLAGS[@]}" "${with[@]}" --config.train.num_steps="${SCALE_STEPS:-500}" \
    --config.loss_scales="$ones" --workdir="$W/scales" >"$W/scales.log" 2>&1 &
  started scales; waited scales; save
  # Everything after needs them: a stop by the budget is a failure here.
  if [ ! -f "$W/scales/baselines.json" ]; then
    tail -n 20 "$W/scales.log"
    echo "error: the scales' Unets did not finish within SCALE_BUDGET (${SCALE_BUDGET:-$BUDGET} s): see scales.log" >&2
    exit 1
  fi
  # The recipe's scales (with FIG6: DC's and TV's of the three), then all of them.
  mapfile -t measured < <(python3 - "$W/scales/baselines.json" "${FIG6:-0}" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["loss_scales"]
text = lambda v: "(" + ", ".join(f"{x:.4g}" for x in v) + ")"
print(text([s[0], s[2]] if sys.argv[2] == "1" else s))
print(text(s))
PY
)
  [ "${#measured[@]}" = 2 ] || { tail -n 20 "$W/scales.log"; exit 1; }
  echo "loss scales measured at the recipe's size: ${measured[1]} ($((SECONDS - start)) s)"
  RECIPE=(--config.loss_scales="${measured[0]}")
fi
# One value per field: a repeated --config.FIELD flag does not simply replace
# the earlier one (a tuple's values are joined), so no program gets a field twice.
STEPS_FLAG=(); [ -n "${STEPS:-}" ] && STEPS_FLAG=(--config.train.num_steps="$STEPS")
train() {  # train <run name> [flags...]
  local run=$1; shift
  timeout -k 30 "$BUDGET" python3 experiments/train.py --config="$CONFIG" \
    "${EXTRA_FLAGS[@]}" "$@" --workdir="$W/$run" >"$W/$run.log" 2>&1 &
  started "$run"
  RUNS="$RUNS $run"
}
RUNS=""
[ "$MAIN" = 1 ] && train endpoints "${RECIPE[@]}" "${STEPS_FLAG[@]}"
[ "${UNIFORM:-1}" = 1 ] && train uniform "${RECIPE[@]}" "${STEPS_FLAG[@]}" \
  --config.hparams.sampler=uniform
[ "${BF16:-0}" = 1 ] && train endpoints_bf16 "${RECIPE[@]}" "${STEPS_FLAG[@]}" \
  --config.model.dtype=bfloat16
if [ "${FIG6:-0}" = 1 ]; then
  train uhs3 "${FIG6_TERMS[@]}" "${STEPS_FLAG[@]}" --config.loss_scales="${measured[1]}"
  train dhs3 "${FIG6_TERMS[@]}" "${STEPS_FLAG[@]}" --config.loss_scales="${measured[1]}" \
    --config.sampling.method=dhs --config.sampling.top_b="${TOP_B:-8}"
fi
if [ -n "${STEPS_128:-}" ]; then
  train r128 "${RECIPE[@]}" --config.data.image_size=128 --config.train.num_steps="$STEPS_128"
  train r128_bf16 "${RECIPE[@]}" --config.data.image_size=128 \
    --config.train.num_steps="$STEPS_128" --config.model.dtype=bfloat16
fi
# The baselines have no resumable stop on a signal: give them steps that fit.
steps=${BASELINE_STEPS:-${STEPS:-}}
BASELINE_STEPS_FLAG=(); [ -n "$steps" ] && BASELINE_STEPS_FLAG=(--config.train.num_steps="$steps")
if [ "$MAIN" = 1 ]; then
  timeout -k 30 "$BUDGET" python3 experiments/baselines.py \
    --config="$CONFIG" "${EXTRA_FLAGS[@]}" "${RECIPE[@]}" "${BASELINE_STEPS_FLAG[@]}" \
    --workdir="$W/baselines" --lambdas="$LAMBDAS" >"$W/baselines.log" 2>&1 &
  started baselines
fi
for run in $RUNS; do waited "$run" budget; done
[ "$MAIN" = 1 ] && waited baselines budget
save
echo "training: $((SECONDS - start)) s"
tail -n 4 "$W"/*.log
# End-to-end speed of each program: steps/s over its logging intervals.
speed_runs="$RUNS"
[ "$MAIN" = 1 ] && speed_runs="$speed_runs baselines"  # MAIN=0 trains no baselines
for run in $speed_runs; do
  [ -f "$W/$run/metrics.jsonl" ] || { echo "$run: no metrics.jsonl"; continue; }
  python3 - "$W/$run/metrics.jsonl" <<'PY'
import json, statistics, sys
# train.py compiles its step before the loop: every interval is training.
rates = [r["steps_per_s"] for r in map(json.loads, open(sys.argv[1])) if "steps_per_s" in r]
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
  case $run in  # the Unets are of the recipe's size and loss
    r128*) with=();; uhs3|dhs3) with=(--config.eval.grid=11);; *) with=("${E[@]}");;
  esac
  python3 experiments/evaluate.py --workdir="$W/$run" "${with[@]}" \
    >"$W/evaluate_$run.log" 2>&1 &
  started "evaluate $run"
done
# The step the shipped run reached (a time budget may have stopped it early).
last_step=$(ls "$W/endpoints/checkpoints" 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -n 1)
# --unfinished: the description names the step it reached.
if [ "$MAIN" = 1 ]; then
  python3 experiments/export_pretrained.py --workdir="$W/endpoints" \
    --unfinished --name="$NAME" "${B[@]}" --folder="$W/export" \
    --description="${DESCRIPTION:-GPU run of $CONFIG, ${last_step:-?} steps}" \
    >"$W/export.log" 2>&1 &
  started export
fi
if [ "${UNIFORM:-1}" = 1 ]; then
  mkdir -p "$W/export_uniform"
  python3 experiments/export_pretrained.py --workdir="$W/uniform" --unfinished \
    --name="${NAME}_uniform" "${B[@]}" --folder="$W/export_uniform" \
    --description="The uniform-lambda control of the run above" \
    >"$W/export_uniform.log" 2>&1 &
  started "export uniform"
fi
# Trained float32 weights evaluated with bfloat16 activations (docs/performance.md).
for run in $([ "$MAIN" = 1 ] && echo endpoints) ${STEPS_128:+r128}; do
  python3 benchmarks/bf16_accuracy.py --workdir="$W/$run" 2>"$W/bf16_accuracy_$run.err" \
    >"$W/bf16_accuracy_$run.jsonl" &
  started "bf16_accuracy $run"
done
for name in "${!PIDS[@]}"; do waited "$name"; done
for run in $RUNS; do tail -n 12 "$W/evaluate_$run.log"; done
[ "$MAIN" = 1 ] && tail -n 5 "$W"/export*.log
cat "$W"/bf16_accuracy_*.jsonl 2>/dev/null
echo "total: $((SECONDS - start)) s"
save
[ "$MAIN" = 1 ] && tar czf "$OUT/export.tgz" -C "$W/export" .
ls -la "$OUT"
if [ "${#FAILED[@]}" != 0 ]; then
  for f in "${FAILED[@]}"; do echo "error: failed: $f (its log is in $OUT/results.tgz)" >&2; done
  exit 1
fi
