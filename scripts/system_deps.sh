#!/usr/bin/env bash
# Install the Debian packages edgeaudio needs (audio server and libraries, a C compiler for the
# firmware tests). As root it installs them; otherwise it says exactly what to run.
set -u
packages=("$@")
if ! command -v dpkg >/dev/null 2>&1; then
    echo "note: not a Debian-like system; make sure these are installed: ${packages[*]}" >&2
    exit 0
fi
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
    echo "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null \
        || { echo "error: apt-get install ${missing[*]} failed" >&2; exit 1; }
else
    echo "warning: missing system packages; please run:" >&2
    echo "    sudo apt-get install ${missing[*]}" >&2
    echo "(without them the microphone path and its tests are unavailable)" >&2
fi
