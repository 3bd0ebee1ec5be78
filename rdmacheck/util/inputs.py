"""Files named on the command line, read with a bound: a regular file under a size cap, or exit 2.

``--env``, ``--profile``, report EVIDENCE and ``--import`` all come through
here.  A FIFO would block the read forever, ``/dev/zero`` never ends (a
MemoryError), and a multi-gigabyte "profile" is a mistake: each is refused
with one line naming the file and what to pass instead.  The file is opened
non-blocking and judged by ``fstat`` of that same descriptor, so a path
swapped between the check and the read cannot slip through.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rdmacheck.util.errors import UsageError

KiB, MiB = 1 << 10, 1 << 20

# Caps per kind of input; each is far above any real file of that kind.
ENV_MAX = 1 * MiB
PROFILE_MAX = 1 * MiB
EVIDENCE_MAX = 256 * MiB   # a cluster run's bench.json with every record
IMPORT_MAX = 64 * MiB      # an nccl-tests table, not a whole job log
COMPOSE_MAX = 1 * MiB      # a compose file
QUARANTINE_MAX = 16 * MiB  # a fleet's quarantine list
LOG_MAX = 256 * MiB        # an NCCL_DEBUG_FILE log


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def human(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB else f"{n // KiB} KiB"


def read_input_file(path: str | os.PathLike, what: str, max_bytes: int, missing: str | None = None) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``max_bytes``.

    ``what`` names the input in messages, e.g. ``"--env"`` or ``"evidence"``; ``missing`` replaces the message
    for a file that does not exist.
    Raises UsageError (exit 2) for a missing, unreadable, non-regular or too big file.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UsageError(missing or f"{what} {p}: file not found") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {p}: is a folder; pass a file") from None
    except OSError as e:
        raise UsageError(f"{what} {p}: cannot open ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{what} {p}: is {_kind(st.st_mode)}, not a regular file; pass a regular file")
        if st.st_size > max_bytes:
            raise UsageError(f"{what} {p}: {st.st_size} bytes is larger than the {human(max_bytes)} such a file "
                             "can sensibly be; pass the right file")
        chunks, total = [], 0
        while True:
            b = os.read(fd, min(1 * MiB, max_bytes + 1 - total))
            if not b:
                break
            chunks.append(b)
            total += len(b)
            if total > max_bytes:  # grew while being read
                raise UsageError(f"{what} {p}: larger than {human(max_bytes)}; pass the right file")
        return b"".join(chunks)
    except OSError as e:
        raise UsageError(f"{what} {p}: cannot read ({e.strerror})") from None
    finally:
        os.close(fd)


def read_input_text(path: str | os.PathLike, what: str, max_bytes: int, errors: str = "strict",
                    missing: str | None = None) -> str:
    """``read_input_file`` decoded as UTF-8; undecodable text is exit 2 unless ``errors`` says otherwise."""
    raw = read_input_file(path, what, max_bytes, missing)
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise UsageError(f"{what} {path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None


def non_regular_kind(path: str | os.PathLike) -> str | None:
    """Why ``path`` (which exists) cannot be an input file, without opening it; None if it can."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return None if stat.S_ISREG(st.st_mode) else _kind(st.st_mode)
