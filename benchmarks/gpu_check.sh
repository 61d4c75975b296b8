#!/usr/bin/env bash
# One prepared GPU call (device tool); benchmarks/gpu_carry.sh builds what it carries: .whl/ (wheels the GPU image lacks),
# .gpu/carry/ray.tar.xz (Ray without its Java/dashboard/library parts: its wheel alone is over
# the transfer limit) and .gpu/carry/la.tar.xz (12 LA volumes, lossless uint8 codes + values).
# Runs: Triton kernel correctness + attention/encoder timings (encoder_paths.py), then the
# SAM stage and end to end (worker path and run-round on a local Ray) with the faster
# compiled rel-pos path (throughput.py), optionally max-autotune (AUTOTUNE=1). Results land in
# $OUT after every measurement. Next call suggested (kernel and attention already measured):
#   ENC_SKIP="check attention" EAGER="fold triton" COMPILE="triton" AUTOTUNE=1 bash benchmarks/gpu_check.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/semisam-bench}
mkdir -p "$OUT"
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | grep -v "WARNING: Target directory" || true
tar xJf .gpu/carry/ray.tar.xz -C /tmp/site || echo "ray unpack failed"
mkdir -p /tmp/la && tar xJf .gpu/carry/la.tar.xz -C /tmp/la
mkdir -p /tmp/ns/semisam
cp semisam/__init__.py /tmp/ns/semisam/
for d in schemas store workers pipeline training; do ln -sfn "$PWD/$d" "/tmp/ns/semisam/$d"; done
export PYTHONPATH=/tmp/ns:/tmp/site
REPO=$PWD
mkdir -p /tmp/run && cd /tmp/run  # Ray puts the driver's folder on its workers' sys.path: not the repo
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
(python3 -c "import torch, triton, zarr, monai, segment_anything, ray, semisam.workers.volume; print('torch', torch.__version__, 'triton', triton.__version__, 'ray', ray.__version__)")
echo "setup $(( $(date +%s) - t0 )) s"
# What earlier calls measured can be left out: ENC_SKIP="check attention", EAGER="fold triton"
# (variants timed eager); MODES adds torch.compile modes for the compiled variants.
timeout ${ENC_TIMEOUT:-200} python3 $REPO/benchmarks/encoder_paths.py --out "$OUT/encoder.json" \
    --compile ${COMPILE:-fold best triton_fp8_mlp} --profile best --skip ${ENC_SKIP:-} \
    ${EAGER:+--eager $EAGER} --compile-mode ${MODES:-default} || echo "encoder_paths exit $?"
REL_POS=$(python3 - "$OUT/encoder.json" <<'PY'
import json, sys
try:
    enc = json.load(open(sys.argv[1]))["encoder"]
except Exception:
    print("fold"); raise SystemExit
rate = lambda n: enc.get(n, {}).get("compiled_slices_per_s") or 0.0
best = enc.get("best_eager_triton_variant", "triton")
print("triton" if max(rate("triton"), rate(best)) > rate("fold") else "fold")
PY
)
echo "encoder_paths done at $(( $(date +%s) - t0 )) s; run-round rel_pos=$REL_POS"
timeout ${E2E_TIMEOUT:-330} python3 $REPO/benchmarks/throughput.py --device cuda --model vit_b --la-dir /tmp/la \
    --slices 256 --naive-slices 32 --batch 32 --dtype bfloat16 --compile --compile-cache /tmp/inductor \
    --rel-pos "$REL_POS" --compile-mode ${E2E_MODE:-default} --student-iters ${STUDENT_ITERS:-200} --volumes 12 --copies ${COPIES:-4} \
    --tasks-in-flight 3 --ray-workers ${RAY_WORKERS:-2} --out "$OUT/throughput.json" \
    || echo "throughput exit $?"
# AUTOTUNE=1: then, while AUTOTUNE_BUDGET seconds of the call are left, the triton encoder
# compiled with max-autotune-no-cudagraphs (GEMM templates with fused epilogues; long compile)
left=$(( ${AUTOTUNE_BUDGET:-560} - ($(date +%s) - t0) ))
if [ "${AUTOTUNE:-0}" = 1 ] && [ "$left" -gt 90 ]; then
    timeout $left python3 $REPO/benchmarks/encoder_paths.py --out "$OUT/encoder-autotune.json" \
        --skip check attention --eager triton --compile triton \
        --compile-mode max-autotune-no-cudagraphs default || echo "autotune exit $?"
fi
echo "total $(( $(date +%s) - t0 )) s"
ls -la "$OUT"
