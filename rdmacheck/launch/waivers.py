"""Waivers: an operator accepts one known failing gate, by id, with a reason.

There is no blanket --force: each waiver names one gate id and carries a
reason; the user and time are added, and the whole waiver is stored on the
Result (``Result.waiver``) so the evidence and the report show who accepted
what and why.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Iterable

from rdmacheck.util.errors import UsageError
from rdmacheck.evidence.model import Result, Status, current_user, now_iso


@dataclasses.dataclass
class Waiver:
    gate: str
    reason: str | None = None


class WaiveAction(argparse.Action):
    """--waive ID: starts a waiver; the next --reason completes it."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, self.dest, None) or [])
        gate = str(values).strip()
        if not gate:
            raise UsageError("--waive needs a gate id, e.g. --waive limits.memlock --reason '...'")
        items.append(Waiver(gate))
        setattr(namespace, self.dest, items)


class ReasonAction(argparse.Action):
    """--reason TEXT: the reason of the --waive just before it."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, "waivers", None) or [])
        if not items or items[-1].reason is not None:
            raise UsageError("--reason must follow a --waive ID (one --reason per --waive)")
        reason = str(values).strip()
        if not reason:
            raise UsageError(f"--reason for {items[-1].gate} is empty; say why the gate may be ignored")
        items[-1].reason = reason
        setattr(namespace, "waivers", items)


def validate(waivers: Iterable[Waiver]) -> list[Waiver]:
    out = list(waivers)
    for w in out:
        if w.reason is None:
            raise UsageError(f"--waive {w.gate} has no --reason; write --waive {w.gate} --reason 'why it is acceptable'")
    return out


def apply(results: list[Result], waivers: Iterable[Waiver], unwaivable: Iterable[str] = (),
          user: str | None = None) -> list[str]:
    """Attach each waiver to the results with its gate id; returns notes for the operator.

    An unknown gate id, or one that may never be waived, is a usage error (exit 2):
    a typo in a waiver must not silently leave a gate unwaived or, worse, look like it was.
    """
    known = sorted({r.id for r in results})
    blocked = set(unwaivable)
    notes: list[str] = []
    who = user or current_user()
    for w in validate(waivers):
        if w.gate in blocked:
            raise UsageError(f"--waive {w.gate}: this gate cannot be waived (it stops a second container being started)")
        hits = [r for r in results if r.id == w.gate]
        if not hits:
            raise UsageError(f"--waive {w.gate}: no such gate; known gate ids: {', '.join(known)}")
        stamp = {"reason": w.reason, "user": who, "time": now_iso()}
        for r in hits:
            r.waiver = dict(stamp)
        if not any(r.status is Status.FAIL for r in hits):
            notes.append(f"waiver for {w.gate} recorded but not needed: the gate did not fail")
    return notes
