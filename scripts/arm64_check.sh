#!/usr/bin/env bash
# The runtime on arm64 (the Raspberry Pi's architecture), emulated with qemu-user: a clean Debian
# bookworm arm64 root, the runtime pip-installed from this checkout as the README tells a Pi user
# (no torch), its commands and the runtime tests run there, and the scores compared with this
# machine's (bench/arm64_check.py). Not part of `make test`: emulated pip and pytest take tens of
# minutes. Timings under emulation mean nothing, so none are reported.
#
#   sudo scripts/arm64_check.sh            # reuse the arm64 root when built, else build it
#   sudo scripts/arm64_check.sh --fresh    # rebuild the root from nothing
#   scripts/arm64_check.sh --root DIR      # root elsewhere (default ../arm64-root, outside the repo)
#   scripts/arm64_check.sh --root-only     # build (or check) the root, run nothing in it
#   scripts/arm64_check.sh --cpu cortex-a76  # the CPU qemu emulates (default cortex-a72)
#
# Writes bench/results/arm64_check.json and .md; the raw outputs of both sides stay in
# ROOT/opt/out/. Needs root (chroot, mounts) and Debian's qemu-user-static, binfmt-support and
# mmdebstrap (installed with apt-get when missing).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=$(realpath -m "$REPO/../arm64-root")
FRESH=0
ROOT_ONLY=0
# The Raspberry Pi 4's core (ARMv8.0-A: NEON, no dot product, no SVE), so the kernels chosen are
# a Pi 4's; cortex-a76 is the Pi 5's, `max` everything qemu implements.
CPU=cortex-a72
while [ $# -gt 0 ]; do
    case "$1" in
        --fresh) FRESH=1 ;;
        --root) ROOT=$(realpath -m "$2"); shift ;;
        --root-only) ROOT_ONLY=1 ;;
        --cpu) CPU=$2; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

SUITE=bookworm
MIRRORS=("deb http://deb.debian.org/debian $SUITE main"
         "deb http://deb.debian.org/debian $SUITE-updates main"
         "deb http://deb.debian.org/debian-security $SUITE-security main")
# What a Raspberry Pi OS (bookworm) user has or installs: Python, venv, pip, and the two C
# libraries the runtime's wheels load (soundfile: libsndfile, sounddevice: PortAudio).
ROOT_PACKAGES=python3,python3-venv,python3-pip,libsndfile1,libportaudio2,ca-certificates
MARKER=.edgeaudio-arm64-root.json
OUT="$ROOT/opt/out"

say() { printf '\n== %s\n' "$*"; }
die() { echo "error: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "needs root (chroot and mounts); run it with sudo"
case "$ROOT/" in "$REPO"/*) die "the arm64 root must be outside the repository ($ROOT)" ;; esac

say "host tools: qemu-user-static, binfmt-support, mmdebstrap"
if ! command -v qemu-aarch64-static >/dev/null || ! command -v mmdebstrap >/dev/null \
        || ! command -v update-binfmts >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static binfmt-support mmdebstrap
fi
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc \
        || die "cannot mount binfmt_misc: aarch64 binaries cannot be run transparently here"
fi
update-binfmts --enable qemu-aarch64 || true
BINFMT=/proc/sys/fs/binfmt_misc/qemu-aarch64
grep -q '^enabled' "$BINFMT" 2>/dev/null || die "binfmt entry qemu-aarch64 is not enabled"
# F (fix-binary): the kernel holds the interpreter open, so it works inside a chroot that lacks it.
grep -q '^flags:.*F' "$BINFMT" || die "binfmt entry qemu-aarch64 lacks the F flag (see $BINFMT)"
dpkg-query -W -f='${Package} ${Version}\n' qemu-user-static mmdebstrap

# The root must not be removed while something is mounted in it: unmount, then delete without
# crossing into any file system that is still mounted.
remove_root() {
    local m
    for m in $(awk -v r="$ROOT/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$m"
    done
    rm -rf --one-file-system "$ROOT"
}

if [ "$FRESH" = 1 ] && [ -e "$ROOT" ]; then
    [ -e "$ROOT/$MARKER" ] || [ -e "$ROOT/etc/debian_version" ] || [ -z "$(ls -A "$ROOT")" ] \
        || die "$ROOT exists and is not an arm64 root this script built; not removing it"
    say "--fresh: removing $ROOT"
    remove_root
fi
if [ ! -e "$ROOT/$MARKER" ]; then
    if [ -e "$ROOT" ]; then   # a build that was interrupted
        [ -e "$ROOT/etc/debian_version" ] || [ -z "$(ls -A "$ROOT")" ] \
            || die "$ROOT exists and is not an arm64 root; remove it or pass --root"
        remove_root
    fi
    say "building a Debian $SUITE arm64 root in $ROOT (packages: $ROOT_PACKAGES)"
    t0=$(date +%s)
    mmdebstrap --arch=arm64 --variant=apt --include="$ROOT_PACKAGES" "$SUITE" "$ROOT" "${MIRRORS[@]}"
    t1=$(date +%s)
    python3 - "$ROOT/$MARKER" "$SUITE" "$ROOT_PACKAGES" "$((t1 - t0))" "$(du -sxm "$ROOT" | cut -f1)" \
        "$(dpkg-query --admindir="$ROOT/var/lib/dpkg" -W -f='.' | wc -c)" <<'EOF'
import json, sys, datetime
path, suite, packages, seconds, mib, n = sys.argv[1:]
json.dump({"suite": suite, "arch": "arm64", "variant": "apt", "include": packages.split(","),
           "build_seconds": int(seconds), "size_mib": int(mib), "debian_packages": int(n),
           "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "tool": "mmdebstrap"}, open(path, "w"), indent=2)
EOF
else
    say "reusing the arm64 root in $ROOT (--fresh rebuilds it)"
fi
cat "$ROOT/$MARKER"
[ "$ROOT_ONLY" = 1 ] && exit 0

say "copying a clean 'git archive HEAD' of the checkout ($(git -C "$REPO" rev-parse --short HEAD))"
rm -rf --one-file-system "$ROOT/opt/edgeaudio" "$OUT"
mkdir -p "$ROOT/opt/edgeaudio" "$OUT/arm64" "$OUT/x86_64"
git -C "$REPO" archive HEAD | tar -x -C "$ROOT/opt/edgeaudio"
git -C "$REPO" rev-parse HEAD > "$OUT/commit"
cp "$ROOT/$MARKER" "$OUT/root.json"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# A host behind a TLS-inspecting proxy trusts it through local CAs: the root needs them too, or
# pip cannot reach PyPI ("self-signed certificate in certificate chain").
mkdir -p "$ROOT/usr/local/share/ca-certificates"
find /usr/local/share/ca-certificates -maxdepth 1 -name '*.crt' \
    -exec cp {} "$ROOT/usr/local/share/ca-certificates/" \;

# Inside the root, as a Pi user would: a new venv, `pip install` of the checkout (the README's
# `pip install edgeaudio`), pytest; then the commands and the runtime tests. Run from the copy's
# root so file names match the host side's; the installed `edgeaudio` script is what runs.
INNER='
set -euo pipefail
cd /opt/edgeaudio
echo "machine $(uname -m), $(python3 --version)"
update-ca-certificates > /dev/null
rm -rf /opt/venv
python3 -m venv /opt/venv
pip_install() {  # LOG, then what to install
    local log=/opt/out/arm64/$1; shift
    /opt/venv/bin/pip install --progress-bar off "$@" > "$log" 2>&1 \
        || { tail -20 "$log"; echo "pip install $* failed"; exit 1; }
    grep "^Successfully" "$log"
}
pip_install pip_install_runtime.log .
pip_install pip_install_pytest.log pytest
/opt/venv/bin/pip freeze > /opt/out/arm64/pip_freeze.txt
/opt/venv/bin/python bench/arm64_check.py collect /opt/out/arm64 --edgeaudio /opt/venv/bin/edgeaudio
# The tests run as `make test` runs them, on the checkout installed editable: they start
# `python -m edgeaudio` from the checkout, where its edgeaudio/ would shadow a plain install and
# hide edgeaudio.train / edgeaudio.export (mapped from train/ and export/).
pip_install pip_install_editable.log --no-deps -e .
set +e
/opt/venv/bin/python -m pytest tests/runtime -q -rs -p no:cacheprovider \
    --junitxml=/opt/out/arm64/pytest.xml 2>&1 | tee /opt/out/arm64/pytest.log | tail -40
echo "${PIPESTATUS[0]}" > /opt/out/arm64/pytest.rc
'
say "running in the arm64 root, qemu CPU $CPU (emulated: slow, tens of minutes)"
# A private mount namespace: /proc, /dev and /dev/shm inside the root vanish with it, even when
# the run is killed. No /sys: it would be the x86-64 host's CPU topology, beside qemu's x86-64
# /proc/cpuinfo, and onnxruntime's CPU probe (cpuinfo) segfaults on that mix at import; without
# /sys it warns once ("cpuinfo_initialize failed") and runs.
unshare --mount --propagation private bash -euo pipefail -c '
    mount -t proc proc "$1/proc"
    mount --bind /dev "$1/dev"
    mount -t tmpfs shm "$1/dev/shm"
    exec chroot "$1" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
        QEMU_CPU="$3" \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        /bin/bash -c "$2"
' unshare-chroot "$ROOT" "$INNER" "$CPU"
printf '{"qemu_cpu": "%s", "qemu": "%s", "venv_mib": %s, "root_mib": %s}\n' "$CPU" \
    "$(dpkg-query -W -f='${Version}' qemu-user-static)" "$(du -sxm "$ROOT/opt/venv" | cut -f1)" \
    "$(du -sxm "$ROOT" | cut -f1)" > "$OUT/run.json"

say "the same commands natively ($(uname -m)) in $REPO/.venv, on the same copy"
( cd "$ROOT/opt/edgeaudio" && PYTHONPATH="$ROOT/opt/edgeaudio" "$REPO/.venv/bin/python" \
    bench/arm64_check.py collect "$OUT/x86_64" --edgeaudio "$REPO/.venv/bin/edgeaudio" )

say "comparing"
"$REPO/.venv/bin/python" "$REPO/bench/arm64_check.py" compare "$OUT" \
    --out "$REPO/bench/results/arm64_check"
