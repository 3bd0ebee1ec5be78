"""The slowest test bed, started as soon as collection ends, so it runs beside the rest of the suite.

The one soft-RoCE guest session takes ~245 s of emulated CPU on a quiet 2-core machine.  Run in the
foreground it left a core idle while the many light tests wait on sockets, timeouts and subprocesses.
Started early in a thread, it overlaps them; the tests that judge its files are moved to the end of the
run (conftest) and only wait for the result here.  Nothing it runs changes.

The README's fresh-venv run (tests/test_quickstart.py) was run this way too, and stays in the foreground:
beside Ray's raylets and a CPU hog it starved them past their bounds (see conftest).
"""

from __future__ import annotations

import threading
from typing import Any, Callable


class Early:
    """One bed's work, running in its own thread from the moment it is made."""

    def __init__(self, name: str, work: Callable[[], Any]) -> None:
        self.name = name
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name=f"early-{name}", daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self._value = work()
        except BaseException as e:  # handed to the test that waits for it, with its own traceback
            self._error = e

    def result(self) -> Any:
        """Wait for the work (each bed's work carries its own hang guard) and return what it returned."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


# name -> the bed started for this session; filled by conftest's pytest_collection_finish
STARTED: dict[str, Early] = {}
