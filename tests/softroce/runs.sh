# The `rdmacheck` function of the soft-RoCE session (sourced by session.sh; tests/test_softroce_runs.py runs
# it on the host).  Needs $O (the output folder), $REPO and $PY; defines rdmacheck, forkserver_ready and
# forkserver_stop.
# A clean environment holding only what each scenario sets: the snapshot records the env, so it must be known.
# Each run is a fork of one warm Python (tests/softroce/forkserver.py says why and how it stays a fresh
# process to rdmacheck); it started at "devices" and answers once it has imported rdmacheck.  Should it
# not come up, every run is its own process as before (session.log says so).
# Its FIFOs live in the guest's own /tmp: the shared folder ($O, 9p) cannot hold one.
FS="$O/forkserver"; FORKSERVER=""; FIFOS=$(mktemp -d)
mkfifo "$FIFOS/requests"
# Every run's clean base, whichever way it starts: the server's own environment, or its own process's.
BASE_ENV=(PATH="$PATH" HOME=/root NO_COLOR=1 COLUMNS=200 PYTHONPATH="$REPO")
# started from a subshell: not a job of this shell, so the scenarios' bare `wait` never waits for it
( env -i "${BASE_ENV[@]}" "$PY" "$REPO/tests/softroce/forkserver.py" "$FIFOS/requests" > "$FS.log" 2>&1 < /dev/null & )
forkserver_ready() {  # wait (once) for the server; after that its answer stands
    [ -n "${FS_ASKED:-}" ] && { [ -n "$FORKSERVER" ]; return; }
    FS_ASKED=1
    for _ in $(seq 1200); do
        [ -f "$FIFOS/requests.ready" ] && { FORKSERVER="$FIFOS/requests"; return 0; }
        sleep 0.1
    done
    echo "forkserver did not come up in 120 s: each run starts its own Python"; return 1
}
rdmacheck() {  # rdmacheck OUTBASE [VAR=VALUE...] -- ARGS...: output to OUTBASE.out, exit code to OUTBASE.rc
    local base="$1" envs=(); shift
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
    if forkserver_ready; then
        local IFS=$'\t' fd rc="" t="${RDMACHECK_TIMEOUT:-300}" done="$FIFOS/${base//\//_}"
        mkfifo "$done"; exec {fd}<>"$done"
        # one line, one write (< PIPE_BUF): parallel callers never interleave; limits as this shell has them
        printf '%s\n' "$base$IFS$done$IFS$t$IFS$PWD$IFS$(ulimit -Sl)$IFS$(ulimit -Hl)$IFS$(ulimit -Ss)$IFS$(ulimit -Hs)$IFS${envs[*]}$IFS--$IFS$*" >> "$FORKSERVER"
        read -r -t $((t + 60)) -u $fd rc || echo "forkserver gave no answer for $base" >> "$base.out"
        exec {fd}<&-; rm -f "$done"
        [ -n "$rc" ] || echo 125 > "$base.rc"
        return 0
    fi
    local t0; t0=$(date +%s.%N)
    timeout "${RDMACHECK_TIMEOUT:-300}" env -i "${BASE_ENV[@]}" "${envs[@]}" "$PY" -m rdmacheck "$@" > "$base.out" 2>&1
    echo $? > "$base.rc"
    echo "$t0 $(date +%s.%N)" > "$base.time"
}
forkserver_stop() {  # the server ends; runs still under way finish and leave their files
    [ -z "$FORKSERVER" ] || echo quit >> "$FORKSERVER"
    FORKSERVER=""; FS_ASKED=1
}
