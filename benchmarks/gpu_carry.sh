#!/usr/bin/env bash
# Builds what benchmarks/gpu_check.sh carries to the GPU machine (all git-ignored, ~60 MB, under
# the device tool's 64 MiB): .whl/ (cp312 wheels its image lacks), .gpu/carry/ray.tar.xz (Ray
# without its Java jar, dashboard build and library packages: the wheel alone is 79 MB) and
# .gpu/carry/la.tar.xz (the first 12 LA volumes of ../shared/data/la as lossless uint8 codes +
# float32 values + labels: image = values[codes]). Run from the repository root.
set -euo pipefail
PIP="python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
     --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64"
mkdir -p .whl .gpu/carry
$PIP -d .whl pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection zarr==3.1.6 \
    numcodecs donfig google-crc32c monai==1.6.1 segment-anything jsonschema \
    jsonschema-specifications referencing rpds-py
tmp=$(mktemp -d)
$PIP -d "$tmp" ray==2.60.0
(cd "$tmp" && unzip -q ray-*.whl && rm -rf ray/jars ray/dashboard/client/build ray/rllib ray/data \
    ray/serve ray/tune ray/train ray/llm ray/tests && tar cf - ray ray-*.dist-info) | xz -6 -T2 > .gpu/carry/ray.tar.xz
mkdir -p "$tmp/la"
.venv/bin/python - "$tmp/la" <<'PY'
import sys
from pathlib import Path

import h5py
import numpy as np

out = Path(sys.argv[1])
for src in sorted(Path("../shared/data/la").glob("*.h5"))[:12]:
    with h5py.File(src, "r") as h5:
        image, label = np.asarray(h5["image"]), np.asarray(h5["label"], np.uint8)
    values, codes = np.unique(image, return_inverse=True)
    assert values.size <= 256 and np.array_equal(values[codes.reshape(image.shape)], image)
    np.save(out / f"{src.stem}.codes.npy", codes.reshape(image.shape).astype(np.uint8))
    np.save(out / f"{src.stem}.values.npy", values.astype(np.float32))
    np.save(out / f"{src.stem}.label.npy", label)
PY
(cd "$tmp/la" && tar cf - .) | xz -9 -T2 > .gpu/carry/la.tar.xz
rm -rf "$tmp"
du -sh .whl .gpu/carry
