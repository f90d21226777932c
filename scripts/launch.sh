#!/usr/bin/env bash
# Runs a pipeline description from pipelines/ with gst-launch-1.0 and facecast's plugins.
# Usage: scripts/launch.sh pipelines/text-to-window.pipeline [release|debug]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
profile=${2:-release}
if [ ! -f "$here/target/$profile/libgstfacecastlipsync.so" ]; then
  if [ "$profile" = release ]; then (cd "$here" && cargo build --release --workspace); else (cd "$here" && cargo build --workspace); fi
fi
export GST_PLUGIN_PATH="$here/target/$profile${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
description=$(grep -v '^[[:space:]]*#' "$1" | tr '\n' ' ')
eval "exec gst-launch-1.0 -e $description"
