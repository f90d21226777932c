#!/usr/bin/env bash
# Prepares what the neural lip-sync tests need, under .cache/ (git-ignored), idempotently:
# - ONNX Runtime's CPU library, from the PyPI wheel `onnxruntime` (ort loads it dynamically);
# - a small Wav2Lip-architecture test model with seeded random weights (numpy + onnx from PyPI).
# Nothing here downloads model weights: the test model is generated.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache="$here/.cache"
ort_version=1.31.1
mkdir -p "$cache/onnxruntime" "$cache/models"

lib="$cache/onnxruntime/libonnxruntime.so.$ort_version"
if [ ! -f "$lib" ]; then
  echo "fetch-test-assets: downloading onnxruntime $ort_version (PyPI wheel)"
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps "onnxruntime==$ort_version" -d "$tmp"
  python3 - "$tmp"/onnxruntime-*.whl "$cache/onnxruntime" <<'PY'
import sys, zipfile, pathlib
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("onnxruntime/capi/lib") and ".so" in name:
            (dest / pathlib.Path(name).name).write_bytes(z.read(name))
PY
  rm -rf "$tmp"
fi

model="$cache/models/wav2lip_w025_seed7.onnx"
if [ ! -f "$model" ]; then
  python3 -c "import numpy, onnx" 2>/dev/null || python3 -m pip install --quiet "numpy<3" "onnx==1.17.0"
  python3 "$here/scripts/make-wav2lip-onnx.py" --width 0.25 --seed 7 "$model"
fi
echo "fetch-test-assets: ONNX Runtime at $lib, test model at $model"
