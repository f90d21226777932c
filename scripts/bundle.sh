#!/usr/bin/env bash
# Packs facecast to run on a machine without Rust, GStreamer or a package manager (a GPU server
# image, say): the stripped release binary, the GStreamer plugins its pipelines use, every
# library they need that is not glibc's (their `ldd` closure), espeak-ng's data, and `run.sh`,
# which points GStreamer, espeak-ng and the dynamic linker at them.
#
#   scripts/bundle.sh DEST        # after `cargo build --release`
#   DEST/run.sh selftest --device cuda:0
#
# The GPU's own libraries (libcuda, NVML, ONNX Runtime with CUDA) are not packed: they belong to
# the machine's driver and the onnxruntime-gpu wheel (see README, "GPU kernels").
set -euo pipefail
dest=${1:?usage: scripts/bundle.sh DEST}
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/release/facecast"
[ -x "$bin" ] || { echo "no $bin: run cargo build --release first" >&2; exit 1; }
gst=/usr/lib/x86_64-linux-gnu/gstreamer-1.0
plugins="coreelements audioconvert audioresample videoconvertscale volume audiomixer opus vpx x264
  openh264 app audiotestsrc videotestsrc webrtc nice rtp rtpmanager srtp dtls isomp4 matroska flv
  rtmp2 srt mpegtsmux videoparsersbad audioparsers voaacenc nvcodec playback typefindfunctions
  jpeg png videorate audiorate"

rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib" "$dest/plugins"
cp "$bin" "$dest/bin/facecast"
strip "$dest/bin/facecast"
for p in $plugins; do
  cp "$gst/libgst$p.so" "$dest/plugins/"
done
cp /usr/bin/gst-launch-1.0 /usr/bin/gst-inspect-1.0 "$dest/bin/"
# Every library the binary, the tools and the plugins load, except glibc's own (the target has
# its own, and mixing two breaks the loader).
for f in "$dest/bin/"* "$dest/plugins/"*.so; do
  ldd "$f" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libresolv.so*) ;;
    *) cp -L "$lib" "$dest/lib/" ;;
  esac
done
cp -r /usr/lib/x86_64-linux-gnu/espeak-ng-data "$dest/espeak-ng-data"
cat > "$dest/run.sh" <<'EOF'
#!/usr/bin/env bash
# Runs a bundled program (default: facecast) with the bundle's GStreamer and libraries.
here=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export GST_PLUGIN_SYSTEM_PATH_1_0="$here/plugins" GST_PLUGIN_PATH_1_0=""
export GST_REGISTRY_1_0="$here/registry.bin" GST_REGISTRY_FORK=no
export ESPEAK_DATA_PATH="$here"
case "${1:-}" in
  gst-launch-1.0|gst-inspect-1.0) tool=$1; shift; exec "$here/bin/$tool" "$@" ;;
esac
exec "$here/bin/facecast" "$@"
EOF
chmod +x "$dest/run.sh"
du -sh "$dest"
