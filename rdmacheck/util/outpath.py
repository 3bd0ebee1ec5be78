"""Output paths checked before any work starts, so a run never ends in "cannot write" after the work.

``--json``, ``-o``, ``--junit``, ``--csv`` and friends all pass through
``check_output_paths`` at the top of their command: the path must not be a
folder or a device (``atomic_write`` renames over the path; renaming over
``/dev/null`` would replace the device node), its nearest existing folder must
take a probe file (created and removed at once: checking leaves nothing behind; the folders
themselves are created when the output is written).  Two outputs may not name
the same file.  Writing itself stays in ``atomic.atomic_write`` (temp file +
rename), called only once the run has produced its result.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from rdmacheck.util.errors import UsageError


def check_output_path(path: str | os.PathLike, flag: str) -> Path:
    """Refuse (exit 2) an output path that could not be written (checking creates nothing)."""
    p = Path(path)
    if str(path) == "" or p.name in ("", ".", ".."):
        raise UsageError(f"{flag} {str(path)!r}: name a file, e.g. reports/out.json")
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise UsageError(f"{flag} {p}: cannot use this path ({e.strerror}); choose another file") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{flag} {p}: is a folder; name a file inside it, e.g. {p / 'out'}")
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{flag} {p}: exists and is not a regular file; choose a file path")
    _probe_folder(p.parent, p, flag)
    return p


def _probe_folder(folder: Path, p: Path, flag: str) -> None:
    """The nearest existing folder at or above ``folder`` must take a new file; nothing is left behind."""
    f = folder
    while not os.path.lexists(f) and f != f.parent:
        f = f.parent
    if not f.is_dir():
        raise UsageError(f"{flag} {p}: {f} is not a folder; choose a path in a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{p.name[:40]}.", suffix=".probe", dir=f)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        where = f if f == folder else f"{f} (to create {folder})"
        raise UsageError(f"{flag} {p}: cannot write in {where} ({e.strerror}); choose a writable path") from None


def check_output_folder(path: str | os.PathLike, flag: str) -> Path:
    """An output folder (``--out-dir``): a folder or not there yet, and writable; created later, not here."""
    p = Path(path)
    if os.path.lexists(p) and not p.is_dir():
        raise UsageError(f"{flag} {p}: exists and is not a folder; choose a folder")
    _probe_folder(p, p / "out", flag)
    return p


def check_output_paths(*pairs: tuple[str | os.PathLike | None, str],
                       inputs: tuple[tuple[str | os.PathLike | None, str], ...] = ()) -> None:
    """``check_output_path`` for each (path, flag) given (None: not asked for); no two may be one file, and
    none may be one of the run's ``inputs`` ((path, flag) of files it reads: ``--json my.env --env my.env``
    replaced the .env with the evidence)."""
    seen: dict[str, str] = {}
    for path, flag in pairs:
        if path is None:
            continue
        p = check_output_path(path, flag)
        key = os.path.realpath(p)
        if key in seen:
            raise UsageError(f"{flag} and {seen[key]} both name {p}; give each output its own file")
        seen[key] = flag
    for path, flag in inputs:
        if path is None or not seen:
            continue
        try:
            key = os.path.realpath(path)
        except (OSError, ValueError):
            continue
        if key in seen:
            raise UsageError(f"{seen[key]} {path} would overwrite {flag} {path}, an input of this run; "
                             "write the output to another file")
