"""Parse ``docker/.env`` the way docker compose reads it.

The same file feeds compose (container environment) and rdmacheck (what the
gates expect), so it has one meaning.  Supported, as in compose:

* ``KEY=value``, optional ``export`` prefix, blank lines and ``#`` comments;
* unquoted values: surrounding blanks trimmed, `` #comment`` after a blank dropped;
* ``'single'`` quotes: literal; ``"double"`` quotes: ``\\n \\t \\" \\\\`` escapes.

Anything else (no ``=``, a bad name, an unterminated or unknown quote such as a
backtick, text after a closing quote) is an error naming the line, because a
half-understood .env is how a container ends up with a different fabric
setting than the one that was checked.
"""

from __future__ import annotations

import re
from pathlib import Path

from rdmacheck.util.errors import UsageError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
MAX_LINE = 64 * 1024
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


class EnvFileError(UsageError):
    pass


def _unquote_double(body: str, where: str) -> str:
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _parse_value(raw: str, where: str) -> str:
    v = raw.strip()
    if not v:
        return ""
    q = v[0]
    if q in "'\"":
        end = v.find(q, 1)
        # a double-quoted value may contain escaped quotes
        if q == '"':
            i = 1
            end = -1
            while i < len(v):
                if v[i] == "\\":
                    i += 2
                    continue
                if v[i] == '"':
                    end = i
                    break
                i += 1
        if end < 0:
            raise EnvFileError(f"{where}: unterminated {q} quote; close the quote on the same line")
        rest = v[end + 1 :].strip()
        if rest and not rest.startswith("#"):
            raise EnvFileError(
                f"{where}: unexpected text after the closing quote ({rest[:20]!r}); "
                "quote the whole value or remove the trailing text"
            )
        body = v[1:end]
        return body if q == "'" else _unquote_double(body, where)
    if q == "`":
        raise EnvFileError(f"{where}: backtick quoting is not supported; use single or double quotes")
    # unquoted: an inline comment starts at ' #'
    m = re.search(r"\s#", v)
    if m:
        v = v[: m.start()]
    return v.strip()


def parse_env_text(text: str, source: str = ".env") -> dict[str, str]:
    """Parse .env text into an ordered dict; raise EnvFileError naming the line."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        where = f"{source} line {n}"
        if len(line) > MAX_LINE:
            # Linux refuses one environment string over 128 KiB (MAX_ARG_STRLEN: E2BIG when
            # compose or the bench starts a process with it): say so here, naming the line
            raise EnvFileError(f"{where}: {len(line)} characters is longer than the {MAX_LINE} an environment "
                               "variable can carry into a process; shorten the value")
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("export ") or s.startswith("export\t"):
            s = s[7:].lstrip()
        if "=" not in s:
            raise EnvFileError(f"{where}: missing '=' in {s[:40]!r}; write KEY=value")
        key, _, raw = s.partition("=")
        key = key.strip()
        if not _NAME.match(key):
            raise EnvFileError(f"{where}: {key[:40]!r} is not a valid variable name; use letters, digits and _")
        out[key] = _parse_value(raw, where)
    return out


def load_env_file(path: str | Path) -> dict[str, str]:
    from rdmacheck.util.inputs import ENV_MAX, read_input_text

    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise EnvFileError(f"env file {p} not found; pass --env FILE or copy docker/.env.example to docker/.env")
    try:
        text = read_input_text(p, "env file", ENV_MAX)
    except UsageError as e:
        raise EnvFileError(str(e)) from None
    return parse_env_text(text, str(p))
