"""What the cluster driver and the isolation phase share about nodes: the node record, a task's
outcome, the progress line and file-name rules (its own module so neither imports the other)."""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

GRACE_S = 10.0          # extra seconds after --node-timeout before a silent rank is declared lost


@dataclasses.dataclass
class Node:
    node_id: str
    label: str
    hostname: str
    ip: str
    name: str
    gpus: int
    resources: dict[str, float]
    state: str = "alive"            # alive | dead (Ray says so) | lost (no answer) | error (answered with an exception)
    phase: str | None = None        # where it failed
    error: str | None = None        # the Ray error, condensed
    files: list[str] = dataclasses.field(default_factory=list)

    def fail(self, state: str, phase: str, error: str) -> None:
        if self.state == "alive":
            self.state, self.phase, self.error = state, phase, error

    @property
    def ok(self) -> bool:
        return self.state == "alive"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"# [{time.monotonic() - _T0:6.1f} s] {msg}", flush=True)


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "node"



@dataclasses.dataclass
class Outcome:
    ok: bool
    value: Any = None
    error: str | None = None
    node_dead: bool = False       # Ray says the node is gone (the node, not just the process)
    timed_out: bool = False
    aborted: bool = False         # given up by the driver because a peer's node died

    @property
    def state(self) -> str:
        return "dead" if self.node_dead else "lost" if self.timed_out else "error"
