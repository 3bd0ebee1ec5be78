# i12a: --only on the live guest node must not change the facts (tests/test_replay_guest.py compares
# them with the session's own preflight/pass.json; the replay and --facts runs happen on the host from
# the session's pass.json and snapshot.tar.gz).  Changes no state: nothing to restore.
R="$O/i12a"; mkdir -p "$R"
if [ -f "$REPO/rdmacheck/preflight/gather.py" ]; then
    rdmacheck "$R/only" -- preflight -q --env "$ENVFILE" --only rdma.devices --json "$R/only.json"
fi
