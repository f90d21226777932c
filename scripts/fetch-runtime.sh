#!/usr/bin/env bash
# Installs what photo and video avatars need at run time, idempotently (make run calls it):
# - ONNX Runtime's CPU library from its PyPI wheel `onnxruntime`, into .cache/onnxruntime/
#   (git-ignored), where facecast finds it without ORT_DYLIB_PATH;
# - the YuNet face detector (Apache-2.0) into models/ (the default models folder), from the
#   workplace's shared folder when this checkout sits in one (FACECAST_SHARED_DIR, default
#   ../shared), else from its home repository;
# - the Silero VAD model (MIT) that voice input (`vad`) needs, into models/, from the PyPI wheel
#   `silero-vad`.
# ORT_DYLIB_PATH and the configuration still override the library; FACECAST_MODELS_DIR the folder.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache="$here/.cache"
ort_version=1.31.1
models="${FACECAST_MODELS_DIR:-$here/models}"
mkdir -p "$cache/onnxruntime" "$models"

lib="$cache/onnxruntime/libonnxruntime.so.$ort_version"
if [ ! -f "$lib" ]; then
  echo "fetch-runtime: downloading onnxruntime $ort_version (PyPI wheel)"
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps "onnxruntime==$ort_version" -d "$tmp"
  python3 - "$tmp"/onnxruntime-*.whl "$cache/onnxruntime" <<'PY'
import sys, zipfile, pathlib
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("onnxruntime/capi/lib") and ".so" in name:
            # Written under a temporary name and renamed: a half-copied library is never found.
            part = dest / (pathlib.Path(name).name + ".part")
            part.write_bytes(z.read(name))
            part.rename(dest / pathlib.Path(name).name)
PY
  rm -rf "$tmp"
fi

shared=${FACECAST_SHARED_DIR:-$here/../shared}
yunet="$models/yunet_n_dynamic.onnx"
yunet_url="https://raw.githubusercontent.com/ShiqiYu/libfacedetection.train/0047ac2/onnx/yunet_n_dynamic.onnx"
if [ ! -f "$yunet" ]; then
  if [ -f "$shared/models/yunet_n_dynamic.onnx" ]; then
    cp "$shared/models/yunet_n_dynamic.onnx" "$yunet.part"
  elif ! curl -fsSL --max-time 60 -o "$yunet.part" "$yunet_url"; then
    rm -f "$yunet.part"
    echo "fetch-runtime: WARNING: cannot download the YuNet face detector from $yunet_url;" \
      "avatar registration needs it in $yunet" >&2
  fi
  if [ -f "$yunet.part" ]; then
    sum=$(grep -s yunet_n_dynamic.onnx "$shared/models/SHA256SUMS" | cut -d' ' -f1 || true)
    if [ -n "$sum" ] && ! echo "$sum  $yunet.part" | sha256sum -c --quiet; then
      rm -f "$yunet.part"
      echo "fetch-runtime: the YuNet detector has the wrong checksum" >&2
      exit 1
    fi
    mv "$yunet.part" "$yunet"
  fi
fi
silero_version=6.2.3
vad="$models/silero_vad.onnx"
if [ ! -f "$vad" ]; then
  echo "fetch-runtime: downloading silero-vad $silero_version (PyPI wheel) for voice input"
  tmp=$(mktemp -d)
  if python3 -m pip download --quiet --no-deps "silero-vad==$silero_version" -d "$tmp"; then
    python3 - "$tmp"/silero_vad-*.whl "$vad" <<'PY'
import sys, zipfile, pathlib
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    part = dest.with_suffix(".onnx.part")
    part.write_bytes(z.read("silero_vad/data/silero_vad.onnx"))
    part.rename(dest)
PY
  else
    echo "fetch-runtime: WARNING: cannot download silero-vad from PyPI; voice input needs $vad" >&2
  fi
  rm -rf "$tmp"
fi

echo "fetch-runtime: ONNX Runtime at $lib, face detector at $yunet, voice activity model at $vad"
