#!/usr/bin/env bash
# Start the Prometheus test bed: Debian's `prometheus` server on loopback, loading the alert rules this
# checkout ships (docker/prometheus/rdmacheck-rules.yml) and scraping whatever targets the tests register.
#
# Targets come and go with the tests: each `rdmacheck watch` a test starts is written as one JSON file
# under $DIR/targets/ (Prometheus' file service discovery, watched with inotify), labelled with the test's
# own run id; tests/test_watch.py reads the server's address from $DIR/url.  The scrape and rule
# evaluation interval is 3 s: at least one watch cycle's wall time on a loaded 2-core machine (~1.6 s
# seen), so "within two scrape intervals" has room.
#   DIR:    ${RDMACHECK_PROMETHEUS_DIR:-/tmp/rdmacheck-prometheus}  (config, targets/, tsdb/, log, pid, url)
#   listen: ${PROMETHEUS_LISTEN:-127.0.0.1:9090}
# Idempotent: a server this checkout started that still answers is left running; another checkout's is replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "prometheus-setup: $*" >&2; }

DIR=${RDMACHECK_PROMETHEUS_DIR:-/tmp/rdmacheck-prometheus}
LISTEN=${PROMETHEUS_LISTEN:-127.0.0.1:9090}
URL="http://$LISTEN"
case "$LISTEN" in 127.*|localhost:*|\[::1\]:*) ;; *) log "PROMETHEUS_LISTEN must be a loopback address, not $LISTEN"; exit 2;; esac

if ! command -v prometheus >/dev/null; then
    log "installing Debian's prometheus"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2
fi

ready() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/-/ready", timeout=2)' "$URL" 2>/dev/null; }
RULES="$PWD/docker/prometheus/rdmacheck-rules.yml"
if [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then
    if ready && grep -qF -- "- $RULES" "$DIR/prometheus.yml" 2>/dev/null; then
        # the rules file may have changed since it started (a new alert): SIGHUP reloads config and rules
        kill -HUP "$(cat "$DIR/pid")" 2>/dev/null || true
        sleep 1
        log "already running at $URL (pid $(cat "$DIR/pid")); rules reloaded"
        exit 0
    fi
    # another checkout's server (its rules, not these) or one that stopped answering: replace it
    log "stopping the server in $DIR (pid $(cat "$DIR/pid")): not this checkout's, or not answering"
    kill "$(cat "$DIR/pid")" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$(cat "$DIR/pid")" 2>/dev/null || break; sleep 0.25; done
fi

mkdir -p "$DIR/targets"
rm -f "$DIR"/targets/*.json
cat > "$DIR/prometheus.yml" <<YML
# written by .ci/prometheus-setup.sh (tests only)
global:
  scrape_interval: 3s
  evaluation_interval: 3s
rule_files:
  - $RULES
scrape_configs:
  - job_name: rdmacheck
    file_sd_configs:
      - files: ["$DIR/targets/*.json"]
        refresh_interval: 1s
YML
promtool check config "$DIR/prometheus.yml" >&2

# setsid: the server must outlive this script and the CI step that ran it
setsid prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/tsdb" \
    --web.listen-address="$LISTEN" --log.level=warn >"$DIR/prometheus.log" 2>&1 </dev/null &
echo $! > "$DIR/pid"
for _ in $(seq 1 120); do
    ready && break
    kill -0 "$(cat "$DIR/pid")" 2>/dev/null || break
    sleep 0.5
done
if ! ready; then
    log "prometheus did not answer at $URL within 60 s; last lines of $DIR/prometheus.log:"
    tail -n 20 "$DIR/prometheus.log" >&2 || true
    exit 1
fi
echo "$URL" > "$DIR/url"
log "prometheus ready at $URL (pid $(cat "$DIR/pid"), folder $DIR)"
