"""Text from evidence or the host made safe for HTML, JUnit XML and the terminal.

Evidence is data from other machines: a host name can hold a lone surrogate
(JSON allows ``"\\ud800"``; UTF-8 cannot encode it, so writing the page would
crash) or control characters (an ESC sequence repaints a terminal; XML 1.0
cannot carry most C0 characters even escaped).  One helper replaces both with
visible stand-ins, so what reaches an output is printable and still shows
that something odd was there.
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls except tab/newline/CR, DEL, C1 controls, lone surrogates, XML's two non-characters
_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_BAD_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _sub(m: re.Match) -> str:
    c = m.group(0)
    if "\ud800" <= c <= "\udfff" or c in "\ufffe\uffff":
        return "\ufffd"
    if c in "\t\n\r":
        return " "
    return f"\\x{ord(c):02x}"


def clean_text(s: Any, one_line: bool = False) -> str:
    """``s`` as text with no lone surrogate or control character (``one_line``: no newline either)."""
    t = s if isinstance(s, str) else str(s)
    return (_BAD_LINE if one_line else _BAD).sub(_sub, t)


def clean_tree(obj: Any) -> Any:
    """Every string (keys too) in a JSON-shaped tree through ``clean_text``."""
    if isinstance(obj, str):
        return clean_text(obj)
    if isinstance(obj, dict):
        return {clean_text(k) if isinstance(k, str) else k: clean_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_tree(v) for v in obj]
    return obj
