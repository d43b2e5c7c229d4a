#!/usr/bin/env bash
# Build an arm64 (aarch64) root in which csideploy/runner.py runs under qemu-user, to
# check that the encoder artifacts give the same outputs on aarch64 builds of numpy,
# onnxruntime and ai-edge-litert as on this machine.
#
#   bash .ci/setup_arm64_root.sh [DIR]     (default: $CSIDEPLOY_ARM64_ROOT or
#                                           ~/.cache/csideploy/arm64-root)
#
# 1. `debootstrap --foreign --variant=minbase --include=python3` downloads Debian's arm64
#    packages and unpacks the essential ones; the rest (python3 among them) are unpacked
#    with `dpkg-deb -x`. No second stage is run: that needs binfmt_misc, which containers
#    usually lack, and an unconfigured root is enough to run python3.
# 2. aarch64 wheels (manylinux) of numpy, onnxruntime and ai-edge-litert, at the versions of
#    the host environment where it has them, are installed into DIR/opt/csideploy/site-packages.
# 3. DIR/proc/cpuinfo gets an aarch64-shaped text. `qemu-aarch64-static -L DIR` resolves every
#    absolute path under DIR first, /proc/cpuinfo included; qemu 7.2 otherwise passes the
#    host's x86 /proc/cpuinfo through, on which onnxruntime's CPU detection segfaults at import.
# 4. A smoke test imports the three packages under qemu, then DIR/.csideploy-ready records
#    the recipe; a later call with the same recipe does nothing.
#
# Run a Python there with:
#   env -i PYTHONPATH=/opt/csideploy/site-packages qemu-aarch64-static -L DIR DIR/usr/bin/python3 ...
# Exit codes: 0 ready, 3 cannot be built here (not root, no apt-get for the tools), 1 failure.
set -euo pipefail

ROOT="${1:-${CSIDEPLOY_ARM64_ROOT:-$HOME/.cache/csideploy/arm64-root}}"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PYTHON="${PYTHON:-python3}"
SITE="opt/csideploy/site-packages"
RECIPE=1
PLATFORMS=(--platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64
           --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64)

say() { echo "setup_arm64_root: $*"; }

version_of() {
    "$PYTHON" -c 'import sys
from importlib import metadata
try:
    print(metadata.version(sys.argv[1]))
except metadata.PackageNotFoundError:
    pass' "$1" 2>/dev/null || true
}
spec() {
    local v
    v="$(version_of "$1")"
    if [ -n "$v" ]; then echo "$1==$v"; else echo "$1"; fi
}
PACKAGES=("$(spec numpy)" "$(spec onnxruntime)" "$(spec ai-edge-litert)")
WANT="recipe=$RECIPE suite=$SUITE packages=${PACKAGES[*]}"

if [ -f "$ROOT/.csideploy-ready" ] && [ "$(cat "$ROOT/.csideploy-ready")" = "$WANT" ]; then
    say "ready, nothing to do: $ROOT ($WANT)"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    say "cannot build the root: debootstrap needs root (run as root in CI)"
    exit 3
fi
missing=()
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v dpkg-deb >/dev/null || missing+=(dpkg)
if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
        say "cannot build the root: missing ${missing[*]} and no apt-get to install them"
        exit 3
    fi
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
"$PYTHON" -m pip --version >/dev/null || { say "no pip for $PYTHON (set PYTHON=...)"; exit 1; }

started=$(date +%s)
PARTIAL="$ROOT.partial"
WHEELS="$(dirname "$ROOT")/arm64-wheels"
rm -rf "$PARTIAL"
mkdir -p "$(dirname "$ROOT")" "$WHEELS"

say "debootstrap --arch=arm64 --foreign --variant=minbase --include=python3 $SUITE -> $PARTIAL"
debootstrap --arch=arm64 --foreign --variant=minbase --include=python3 \
    "$SUITE" "$PARTIAL" "$MIRROR" >"$PARTIAL.log" 2>&1 || {
    tail -20 "$PARTIAL.log"; say "debootstrap failed (log above)"; exit 1; }

say "unpacking $(ls "$PARTIAL"/var/cache/apt/archives/*.deb | wc -l) packages with dpkg-deb -x"
for deb in "$PARTIAL"/var/cache/apt/archives/*.deb; do
    dpkg-deb -x "$deb" "$PARTIAL"
done
rm -f "$PARTIAL"/var/cache/apt/archives/*.deb "$PARTIAL.log"

PY_BIN="$(cd "$PARTIAL/usr/bin" && ls python3.[0-9]* | grep -E '^python3\.[0-9]+$' | sort -V | tail -1)"
PY_VERSION="${PY_BIN#python}"
say "root python: $PY_BIN"

say "writing an aarch64 proc/cpuinfo (2 cores)"
mkdir -p "$PARTIAL/proc"
: >"$PARTIAL/proc/cpuinfo"
for n in 0 1; do
    printf 'processor\t: %s\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n' "$n" >>"$PARTIAL/proc/cpuinfo"
done

say "pip download (aarch64, cp${PY_VERSION/./}): ${PACKAGES[*]}"
if ! "$PYTHON" -m pip download --disable-pip-version-check --only-binary=:all: "${PLATFORMS[@]}" \
        --python-version "$PY_VERSION" --implementation cp -d "$WHEELS" "${PACKAGES[@]}" \
        >"$PARTIAL.pip.log" 2>&1; then
    tail -20 "$PARTIAL.pip.log"; say "pip download failed (log above)"; exit 1
fi
say "pip install --target $PARTIAL/$SITE"
if ! "$PYTHON" -m pip install --disable-pip-version-check --no-index --find-links "$WHEELS" \
        --only-binary=:all: "${PLATFORMS[@]}" --python-version "$PY_VERSION" \
        --implementation cp --target "$PARTIAL/$SITE" "${PACKAGES[@]}" \
        >"$PARTIAL.pip.log" 2>&1; then
    tail -20 "$PARTIAL.pip.log"; say "pip install failed (log above)"; exit 1
fi
rm -f "$PARTIAL.pip.log"

say "smoke test under qemu-aarch64-static"
env -i PATH=/usr/bin:/bin PYTHONPATH="/$SITE" PYTHONNOUSERSITE=1 \
    qemu-aarch64-static -L "$PARTIAL" "$PARTIAL/usr/bin/$PY_BIN" -c '
import platform, numpy, onnxruntime
import ai_edge_litert.interpreter
print("  ", platform.machine(), "python", platform.python_version(), "numpy", numpy.__version__,
      "onnxruntime", onnxruntime.__version__)'

echo "$WANT" >"$PARTIAL/.csideploy-ready"
rm -rf "$ROOT"
mv "$PARTIAL" "$ROOT"
say "ready: $ROOT in $(( $(date +%s) - started )) s ($(du -sh "$ROOT" | cut -f1))"
