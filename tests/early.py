"""The slowest test beds, started as soon as collection ends, so they run beside the rest of the suite.

The one soft-RoCE guest session (the longest: ~12 minutes of a loaded 2-core machine with the data-path
and lossless blocks) and the README's quick start in a fresh venv (~185 s: pip, then a second pytest on
one core); once the quick start has ended, the q35 guest of the PCIe ACS test (~45 s of one emulated CPU).
Run in the foreground they left a core idle while the many light tests wait on sockets, timeouts and
subprocesses, or use one core.  Started early, in a thread each, they overlap them; the tests that judge
them are moved to the end of the run (conftest) and only take the result here.

The Ray beds wait for the quick start and the q35 guest (beside them and a CPU hog they starved the
raylets past their bounds), not for the soft-RoCE guest: behind it they added their ~200 s to the run's
longest chain (CI: 1,132 s).  Beside it alone they passed (2-core machine, full suite: 782 s).  Nothing is
skipped or shortened by this: each bed runs what it ran in the foreground.
"""

from __future__ import annotations

import threading
from typing import Any, Callable


class Early:
    """One bed's work, in its own thread from the moment it is made; it starts once the beds in
    ``after`` have ended, however they ended."""

    def __init__(self, name: str, work: Callable[[], Any], after: list["Early"] | tuple["Early", ...] = ()) -> None:
        self.name = name
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work, tuple(after)), name=f"early-{name}",
                                        daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], Any], after: tuple["Early", ...]) -> None:
        for bed in after:
            bed.wait()
        try:
            self._value = work()
        except BaseException as e:  # handed to the test that waits for it, with its own traceback
            self._error = e

    def wait(self) -> None:
        """Wait until the work has ended, however it ended (result() says how)."""
        self._thread.join()

    def result(self) -> Any:
        """Wait for the work (each bed's work carries its own hang guard) and return what it returned."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


# name -> the bed started for this session; filled by conftest's pytest_collection_finish
STARTED: dict[str, Early] = {}
