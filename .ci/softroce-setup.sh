#!/usr/bin/env bash
# Prepare the soft-RoCE guest test bed (see docs/softroce.md and ../shared/testbeds/softroce.md).
#
# This machine's own kernel has no RDMA; a QEMU guest booted (virtme-ng) with Debian's stock kernel
# has rdma_rxe, which gives real RDMA devices.  This script:
#   - installs the Debian packages the guest uses (the guest sees this host's root read-only),
#   - downloads the stock kernel package that `apt-cache depends linux-image-amd64` names with
#     `apt-get download` (never installed into /boot) and unpacks it into .cache/softroce/kroot,
#   - runs depmod on it (the .deb ships no modules.dep),
#   - installs virtme-ng (vng) with pip when it is missing.
# Idempotent and fast when already done.  Prints the kernel image path on its last line.
set -euo pipefail

cd "$(dirname "$0")/.."
CACHE="${SOFTROCE_CACHE:-$PWD/.cache/softroce}"
KROOT="$CACHE/kroot"
PKGS=(qemu-system-x86 busybox-static kmod iproute2 procps rdma-core ibverbs-utils ibverbs-providers python3-pyverbs perftest)

log() { echo "softroce-setup: $*" >&2; }

apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        apt_updated=1
    fi
}

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt_update
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# The stock kernel package: the one the linux-image-amd64 meta package depends on today.
kpkg_name() { apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}'; }
KPKG="$(kpkg_name || true)"
if [ -z "$KPKG" ]; then
    apt_update
    KPKG="$(kpkg_name || true)"
fi
if [ -z "$KPKG" ]; then
    log "cannot find the kernel package: 'apt-cache depends linux-image-amd64' names none"
    exit 1
fi
KVER="${KPKG#linux-image-}"

if [ -f "$KROOT/boot/vmlinuz-$KVER" ] && [ -s "$KROOT/lib/modules/$KVER/modules.dep" ] \
        && [ "$(cat "$CACHE/kernel-version" 2>/dev/null)" = "$KVER" ]; then
    log "kernel $KVER already unpacked in $KROOT"
else
    mkdir -p "$CACHE"
    rm -rf "$KROOT" "$CACHE/kernel-version"
    if ! ls "$CACHE/${KPKG}"_*.deb >/dev/null 2>&1; then
        log "apt-get download $KPKG"
        rm -f "$CACHE"/linux-image-*.deb
        (cd "$CACHE" && apt-get download -qq "$KPKG" >&2) || { apt_update; (cd "$CACHE" && apt-get download -qq "$KPKG" >&2); }
    fi
    deb="$(ls "$CACHE/${KPKG}"_*.deb | head -n1)"
    log "unpacking $deb"
    mkdir -p "$KROOT.tmp"
    dpkg -x "$deb" "$KROOT.tmp"
    depmod -b "$KROOT.tmp" "$KVER"
    mv "$KROOT.tmp" "$KROOT"
    # The .deb is no longer needed once unpacked (it is ~70 MB).
    rm -f "$deb"
    echo "$KVER" > "$CACHE/kernel-version"
fi

if ! command -v vng >/dev/null 2>&1 || ! vng --version >/dev/null 2>&1; then
    log "pip install virtme-ng"
    python3 -m pip install -q "virtme-ng==1.42" >&2
fi

echo "$KROOT/boot/vmlinuz-$KVER"
