"""Slow test beds started as soon as collection ends, so they run beside the rest of the suite.

Two beds take most of a CI run: the one soft-RoCE guest session (~230 s of emulated CPU on a quiet
2-core machine) and the README's quick start in a fresh venv (~210 s: pip, then a second pytest).  Run in
the foreground, one after the other, they left a core idle while the many other tests wait on sockets,
timeouts and Ray.  Started early in a thread each, their work overlaps that waiting; the tests that judge
them are moved to the end of the run (conftest) and only wait for the result here.  The fresh-venv run
starts when the guest has ended (two emulated vCPUs and a second pytest at once starve the timing-bound
tests on two cores), beside the heavy beds that conftest orders after the light tests.

Nothing is skipped or shortened by this: each bed runs exactly what it ran in the foreground.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable


class Early:
    """One bed's work, running in its own thread from the moment it is made."""

    def __init__(self, name: str, work: Callable[[], Any]) -> None:
        self.name = name
        self.started = time.monotonic()
        self.seconds: float | None = None
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name=f"early-{name}", daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self._value = work()
        except BaseException as e:  # handed to the test that waits for it, with its own traceback
            self._error = e
        finally:
            self.seconds = time.monotonic() - self.started

    def wait(self) -> None:
        """Block until the work has ended, however it ended."""
        self._thread.join()

    def result(self) -> Any:
        """Wait for the work (each bed's work carries its own hang guard) and return what it returned."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


# name -> the bed started for this session; filled by conftest's pytest_collection_finish
STARTED: dict[str, Early] = {}
