"""Atomic file output: a reader never sees a half-written report or evidence file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rdmacheck.util.errors import UsageError


def atomic_write(path: str | os.PathLike, data: str | bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and rename.

    rename(2) within one filesystem is atomic, so ``path`` holds either the old
    content or the whole new one.  Parent folders are created.
    """
    p = Path(path)
    if p.exists() and not p.is_file():
        # rename(2) over a device replaces the node itself (--json /dev/null would delete /dev/null)
        raise UsageError(f"cannot write {p}: it exists and is not a regular file; choose a file path")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    except OSError as e:
        raise UsageError(f"cannot write {p}: {e.strerror}; choose a writable path") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, p)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            # a full disk, a quota, an I/O error: the machine's state, not a bug; the old file is kept
            raise UsageError(f"cannot write {p}: {e.strerror or e}; {p} was left as it was: free space there or "
                             "choose another path") from None
        raise
    return p
