#!/usr/bin/env bash
# Prepares a device call on this machine (the one with the network): the
# wheels the GPU machine's image lacks, and the embedded dataset at 64×64 and
# 256×256, so that nothing there needs the network or nilearn's template.
#
#   bash benchmarks/gpu_prepare.sh        # writes .whl/ and .gpu/data/ (ignored by git)
#
# Then, with the device tool, carry [".whl", ".gpu"] and start the command with
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=$PWD:/tmp/site HYPERRECON_DATA_DIR=$PWD/.gpu/data && ...
# e.g. `... && bash benchmarks/gpu_train.sh` or `... && bash benchmarks/gpu_suite.sh`.
# The image holds jax, flax, optax, orbax-checkpoint, chex, etils, h5py,
# pandas and scikit-image (/work/.library/device/KINDS.md); the versions below
# are those of the development environment, for Python 3.12 on x86-64.
set -euo pipefail
PYTHON=${PYTHON:-python3}
SIZES=${SIZES:-64 256}
for entry in .whl .gpu; do
  grep -qx "/$entry/" .git/info/exclude 2>/dev/null || echo "/$entry/" >>.git/info/exclude
done
PLATFORMS=()
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
    manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64; do
  PLATFORMS+=(--platform "$p")
done
WHEELS=(ml_collections==1.1.0 nilearn==0.14.1 nibabel==5.4.2
  tensorflow-datasets==4.9.10 array-record==0.8.6 grain==0.2.18 dm-tree==0.1.10
  docstring-parser==0.18.0 googleapis-common-protos==1.76.0 immutabledict==4.3.1
  portpicker==1.6.0 simple-parsing==0.1.9 tensorflow-metadata==1.21.0 termcolor==3.3.0
  toml==0.10.2 tzdata==2026.6)
mkdir -p .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" -d .whl "${WHEELS[@]}"
# promise (a tensorflow-datasets dependency) is published as a source archive only.
ls .whl/promise-*.whl >/dev/null 2>&1 || "$PYTHON" -m pip wheel -q --no-deps -w .whl promise==2.3
for size in $SIZES; do
  HYPERRECON_DATA_DIR=$PWD/.gpu/data "$PYTHON" - "$size" <<'PY'
import sys
sys.path.insert(0, "experiments/configs")
import default
import hyperrecon_jax as hr
config = default.get_config()
config.data.image_size = int(sys.argv[1])
hr.data.prepare(config.data)
print(f"mni152 at {sys.argv[1]}²:",
      {s: hr.data.num_examples(config.data, s) for s in ("train", "validation", "test")})
PY
done
du -sh .whl .gpu
