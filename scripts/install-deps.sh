#!/usr/bin/env bash
# Installs every Debian package facecast needs to build, test and run (Debian 12).
# Idempotent: packages already present are skipped by apt. Run as root or with sudo available.
set -euo pipefail

packages=(
  pkg-config clang libclang-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
  libespeak-ng-dev espeak-ng-data
  libnice10 gstreamer1.0-nice
  chromium chromium-driver
  curl ca-certificates
  # Test-only: the conversation memory tests start their own redis-server; a speech
  # recogniser checks that Piper voices are intelligible; the restream tests push to their own
  # nginx RTMP server.
  redis-server gstreamer1.0-pocketsphinx pocketsphinx-en-us nginx libnginx-mod-rtmp
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all Debian packages present"
  exit 0
fi

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
echo "install-deps: installing ${missing[*]}"
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
