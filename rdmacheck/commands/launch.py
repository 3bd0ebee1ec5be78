"""`rdmacheck launch`: start the Ray head/worker container only after every gate has passed."""

from __future__ import annotations

import argparse

from rdmacheck.util.errors import UsageError
from rdmacheck.util.units import seconds_type

DESCRIPTION = """\
Run every preflight gate (the same code as `rdmacheck preflight`) plus the container
gates docker.engine, docker.runtime, docker.image, docker.compose and docker.container.
If any gate fails, refuse: print the failing gates with their remedies, exit 1, and
leave Docker untouched. Otherwise run `docker compose -f COMPOSE --env-file ENV -p
rdmacheck-ROLE up -d` (compose v2, else docker-compose v1), wait for the container to
be healthy, and write launch evidence (gates, waivers, compose command, container id).
"""

EPILOG = """\
examples:
  rdmacheck launch --role head --env docker/.env --dry-run
  rdmacheck launch --role head --env docker/.env
  rdmacheck launch --role worker --waive limits.memlock --reason "capped by the hosting provider, ticket 42"
  rdmacheck launch --role head down

A waiver accepts one failing gate, by id, with a reason; the reason, the user and the
time go into the evidence. There is no blanket --force; docker.container (a running
container of this node) can never be waived.

exit codes: 0 launched and healthy (or, with --dry-run, would launch), 1 refused or
unhealthy (or the Docker daemon did not answer: named, within ~16 s, also after a waiver),
2 usage/input error (malformed .env, undefined compose variable, bad waiver), 3 internal error.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..launch.waivers import ReasonAction, WaiveAction
    from rdmacheck.preflight.judge import add_config_arguments

    p.add_argument("action", nargs="?", choices=("up", "down"), default="up",
                   help="up (default): gate and start the container; down: stop and remove it")
    p.add_argument("--role", required=True, choices=("head", "worker"),
                   help="head runs `ray start --head`, worker joins RAY_ADDRESS (sets RAY_MODE for compose)")
    add_config_arguments(p)
    g = p.add_argument_group("launch")
    g.add_argument("--compose", metavar="FILE", help="compose file (default docker/compose.yaml)")
    g.add_argument("--compose-driver", choices=("auto", "v2", "v1"), default="auto",
                   help="auto (default): `docker compose` (v2) when the plugin exists, else `docker-compose` (v1)")
    g.add_argument("--project", metavar="NAME", help="compose project name (default rdmacheck-ROLE)")
    g.add_argument("--dry-run", action="store_true", help="run the gates and print what would run; change nothing")
    g.add_argument("--pull", action="store_true",
                   help="pull the image when it is not present locally (only after every other gate passed)")
    g.add_argument("--waive", dest="waivers", metavar="ID", action=WaiveAction, default=[],
                   help="accept one failing gate by id; must be followed by --reason (repeatable)")
    g.add_argument("--reason", metavar="TEXT", action=ReasonAction,
                   help="why the preceding --waive is acceptable (recorded with user and time)")
    g.add_argument("--health-timeout", metavar="S", type=seconds_type("--health-timeout"), default=300.0,
                   help="seconds to wait for the container to be healthy (default 300)")
    g.add_argument("--down", dest="down_flag", action="store_true", help="same as the `down` action")
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="FILE",
                   help="write the launch evidence here (default reports/launch-HOST-ROLE-TIME.json)")


def run(args: argparse.Namespace) -> int:
    from ..launch.launcher import LaunchOptions, down, launch
    from rdmacheck.util.outpath import check_output_paths
    from rdmacheck import preflight

    check_output_paths((args.json, "--json"), inputs=((getattr(args, "env", None), "--env"),
                       (getattr(args, "profile", None), "--profile"), (getattr(args, "compose", None), "--compose")))

    opts = LaunchOptions(
        role=args.role,
        action="down" if (args.down_flag or args.action == "down") else "up",
        env_file=args.env,
        compose_file=args.compose,
        project=args.project,
        compose_driver=args.compose_driver,
        dry_run=args.dry_run,
        pull=args.pull,
        waivers=list(args.waivers or []),
        json_path=args.json,
        health_timeout=args.health_timeout,
    )
    if opts.action == "down":
        if opts.waivers:
            raise UsageError("--waive applies to launching, not to down")
        return down(opts)
    root, config = preflight.open_config(args.root or "/", args.env, args.profile, args.expect)
    # The gates judge the node as the role being launched (net.peer checks the role against the
    # addresses): --role wins over RAY_MODE/RDMACHECK_ROLE from the .env, as it does for compose.
    for key in ("RAY_MODE", "RDMACHECK_ROLE"):
        config.env[key] = opts.role
        config.env_sources[key] = "launch --role"
    return launch(opts, root, config)
