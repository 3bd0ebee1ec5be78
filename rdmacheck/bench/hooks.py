"""Per-size callbacks: how other modules observe a sweep without touching the runner.

Every rank runs every hook at the same point of the sweep, in registration order:

* ``before_size(row: PlanRow)`` before the buffers of a size are allocated;
* ``after_size(row: PlanRow, record: dict)`` once the size is measured and the
  cross-rank time and #wrong are known.  ``record`` is the out-of-place record
  when there is one (else in-place); a hook may add keys to it (e.g.
  ``record["wire"] = {...}``) and rank 0 writes them into the evidence;
* ``after_run(info: RunInfo) -> iterable of Result``: extra gate results
  (e.g. ``bench.transport``, ``bench.wire``); rank 0's are added to the evidence.

Because all ranks call a hook at the same place, a hook may use
torch.distributed collectives (``dist.all_gather_object`` to bring per-rank
NIC counters to rank 0, say).  A hook that raises ends the run like a failed
collective (named rank and phase, exit 1).

Register hooks in code (``HOOKS.before_size.append(fn)``) or from the command
line with ``--hook package.module:install``, where ``install(hooks: BenchHooks)``
appends its callbacks; ``install`` runs on every rank, also under torchrun.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Iterable

from rdmacheck.util.errors import UsageError


@dataclasses.dataclass
class RunInfo:
    """What ``after_run`` hooks see."""

    rank: int
    world_size: int
    backend: str
    records: list[dict[str, Any]]
    context: dict[str, Any]
    results: list[Any]          # the bench's own Results so far (rank 0's view)


@dataclasses.dataclass
class BenchHooks:
    before_size: list[Callable[..., None]] = dataclasses.field(default_factory=list)
    after_size: list[Callable[..., None]] = dataclasses.field(default_factory=list)
    after_run: list[Callable[[RunInfo], Iterable[Any]]] = dataclasses.field(default_factory=list)

    def extend(self, other: "BenchHooks") -> None:
        self.before_size += other.before_size
        self.after_size += other.after_size
        self.after_run += other.after_run


# Process-wide hooks; the runner uses these plus any passed to it explicitly.
HOOKS = BenchHooks()


def resolve_hook(spec: str) -> Callable[[BenchHooks], None]:
    """``package.module:install`` -> the ``install`` function, or UsageError (exit 2) naming what is wrong.

    Called by ``rdmacheck bench`` before any rank starts, and by each rank to load it.
    """
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise UsageError(f"--hook {spec!r}: write MODULE:FUNCTION, e.g. mypkg.wire:install")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise UsageError(f"--hook {spec!r}: cannot import {mod_name} ({e}); check the module is on PYTHONPATH") from None
    except Exception as e:  # the module itself raised while importing
        raise UsageError(f"--hook {spec!r}: importing {mod_name} raised {type(e).__name__}: {str(e)[:200]}") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise UsageError(f"--hook {spec!r}: {mod_name} has no function {attr}")
    import inspect

    try:
        inspect.signature(fn).bind(BenchHooks())
    except TypeError:
        raise UsageError(f"--hook {spec!r}: {attr} cannot be called as {attr}(hooks); a hook is a function of one "
                         "argument, e.g. def install(hooks): hooks.before_size.append(...)") from None
    except ValueError:
        pass  # no signature to read (some builtins): calling it says the rest
    return fn


def load_hook(spec: str, hooks: BenchHooks) -> None:
    """``package.module:install`` -> import it and call ``install(hooks)``."""
    resolve_hook(spec)(hooks)
