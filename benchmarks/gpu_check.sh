#!/usr/bin/env bash
# One prepared GPU call (device tool): install carried wheels, expose the repo as semisam.*,
# run the throughput benchmark eager and compiled. Results land in $OUT.
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/semisam-bench}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/ns/semisam
cp semisam/__init__.py /tmp/ns/semisam/
for d in schemas store workers pipeline training; do ln -sfn "$PWD/$d" "/tmp/ns/semisam/$d"; done
export PYTHONPATH=/tmp/ns:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
(cd /tmp && python3 -c "import torch, zarr, monai, segment_anything, semisam.workers.volume; print('torch', torch.__version__, 'zarr', zarr.__version__)"); echo
COMMON="--device cuda --model vit_b --la-dir .gpu/la --slices ${SLICES:-256} --naive-slices 32 --batch ${BATCH:-32} --dtype bfloat16"
[ -n "${SKIP_EAGER:-}" ] || timeout ${EAGER_TIMEOUT:-150} python3 benchmarks/throughput.py $COMMON --skip e2e --out "$OUT/gpu-eager.json" || echo "eager run failed: $?"
timeout ${COMPILED_TIMEOUT:-330} python3 benchmarks/throughput.py $COMMON --compile --compile-cache /tmp/inductor \
    --student-iters ${STUDENT_ITERS:-200} --volumes ${VOLUMES:-16} ${EXTRA:-} --out "$OUT/gpu-compiled.json" || echo "compiled run failed: $?"
ls -la "$OUT"
