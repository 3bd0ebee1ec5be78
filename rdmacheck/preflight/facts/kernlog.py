"""XID events and NIC fatal lines from the kernel log, read as a file through the root.

Where: the first of :data:`LOG_FILES` that is a readable regular file, its last :data:`TAIL_BYTES`
(``HostRoot.read_tail``: ``rdmacheck snapshot`` copies the same end, so a replay sees what the live read
saw).  ``/var/log/kern.log`` is rsyslog's kernel facility on Debian and Ubuntu, ``/var/log/messages``
on RHEL and SUSE, ``/var/log/syslog`` Debian/Ubuntu's catch-all.  Not read, and why:

* ``/dev/kmsg`` is a character device (a read blocks, and a snapshot cannot hold it; ``HostRoot`` reads
  regular files only), ``dmesg`` is a subprocess over it, and its ring buffer forgets;
* journald's binary journal (``/var/log/journal``) needs journalctl to decode.  A host that keeps its
  kernel log only there has no text log: the gate says so (skip), never "no XID".

This boot only: the lines after the last kernel banner (``Linux version ...``, which every boot logs
first) in the window read.  With no banner in the window the whole window is this boot's (the file is
appended to while the host runs; a log that stopped being written is the one case this cannot tell).

Lines (NVIDIA's Xid catalog; mlx5 ``health.c``):

* ``NVRM: Xid (PCI:0000:3b:00): 79, pid=..., GPU has fallen off the bus.`` (older drivers omit ``PCI:``);
* mlx5: ``mlx5_core 0000:41:00.0: ... device's health compromised - reached miss count``,
  ``Fatal error <n> detected``, ``synd 0x8: unrecoverable hardware error``, ``FW is unable to respond``,
  a command ``timeout``; and PCIe AER reports naming a function (``AER: Corrected error received:
  0000:41:00.0``, or its detail line ``0000:41:00.0: AER: PCIe Bus Error: severity=Corrected``).
"""

from __future__ import annotations

import re
from typing import Any

from ..root import HostRoot

LOG_FILES = ("/var/log/kern.log", "/var/log/messages", "/var/log/syslog")
TAIL_BYTES = 1 << 20
MAX_EVENTS = 200   # kept per kind (the newest); the count says how many there were

_XID = re.compile(r"NVRM: Xid \((?:PCI:)?([0-9A-Fa-f]{4,}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}(?:\.[0-7])?)\): (\d+),? ?(.*)")
_BANNER = re.compile(r"\bkernel: (?:\[\s*[\d.]+\] )?Linux version \d")
_BDF = r"([0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])"
_MLX5 = re.compile(r"mlx5_core " + _BDF + r":.*?(device's health compromised[^\n]*|Fatal error \d+ detected|"
                   r"unrecoverable hardware error|FW is unable to respond[^\n]*|\S+\(0x[0-9a-f]+\) timeout[^\n]*)")
_SEV = r"(Uncorrected \((?:Fatal|Non-Fatal)\)|Corrected)"
# drivers/pci/pcie/aer.c: the port that got the message names the source ("... error received: 0000:41:00.0"),
# then the source's own detail line ("mlx5_core 0000:41:00.0: AER: PCIe Bus Error: severity=Corrected, ...")
_AER_RECV = re.compile(r"AER: " + _SEV + r" error (?:message )?received: " + _BDF)
_AER_DEV = re.compile(_BDF + r": AER: PCIe Bus Error: severity=" + _SEV)


def parse(text: str) -> dict[str, Any]:
    """XID events and NIC lines of this boot in ``text`` (see the module doc)."""
    lines = text.splitlines()
    start = 0
    for i, line in enumerate(lines):
        if _BANNER.search(line):
            start = i
    xid: list[dict[str, Any]] = []
    nic: list[dict[str, Any]] = []
    earlier = 0
    for i, line in enumerate(lines):
        m = _XID.search(line)
        if m:
            if i < start:
                earlier += 1
                continue
            xid.append({"pci": m.group(1).lower(), "xid": int(m.group(2)), "text": m.group(3).strip()[:300]})
            continue
        if i < start:
            continue
        m = _MLX5.search(line)
        if m:
            nic.append({"pci": m.group(1).lower(), "kind": "mlx5", "text": m.group(2).strip()[:300]})
            continue
        m = _AER_RECV.search(line)
        if m:
            nic.append({"pci": m.group(2).lower(), "kind": "aer", "text": m.group(1)})
            continue
        m = _AER_DEV.search(line)
        if m:
            e = {"pci": m.group(1).lower(), "kind": "aer", "text": m.group(2)}
            if not nic or nic[-1] != e:  # the detail line of the event just counted
                nic.append(e)
    return {"boot_marker": start > 0 or bool(lines and _BANNER.search(lines[0])), "lines": len(lines),
            "xid_count": len(xid), "xid": xid[-MAX_EVENTS:], "xid_before_boot": earlier,
            "nic_count": len(nic), "nic": nic[-MAX_EVENTS:]}


def read_kernel_log(root: HostRoot) -> dict[str, Any]:
    """The parsed kernel log (``source``: the file read), or ``source`` None and ``why``."""
    for path in LOG_FILES:
        text = root.read_tail(path, TAIL_BYTES)
        if text is not None:
            return {"source": path, "bytes": len(text.encode("utf-8", "replace")), **parse(text)}
    return {"source": None,
            "why": "no readable kernel log file (" + ", ".join(LOG_FILES) + "): a journald-only host keeps the "
                   "kernel log in its binary journal (journalctl -k), and /dev/kmsg is a device, not a file"}


def same_function(a: str, b: str) -> bool:
    """Does a kernel-log PCI address name this function?  ``0000:3b:00`` (Xid: no function) matches
    ``00000000:3b:00.0`` (NVML's 8-digit domain) and ``0000:3b:00.0`` (sysfs)."""
    def norm(x: str) -> tuple[int, int, int, int | None]:
        m = re.fullmatch(r"([0-9a-fA-F]+):([0-9a-fA-F]+):([0-9a-fA-F]+)(?:\.([0-7]))?", x.strip())
        if not m:
            return (-1, -1, -1, None)
        return (int(m.group(1), 16), int(m.group(2), 16), int(m.group(3), 16),
                int(m.group(4)) if m.group(4) is not None else None)

    na, nb = norm(a), norm(b)
    if na[:3] != nb[:3] or na[0] < 0:
        return False
    return na[3] is None or nb[3] is None or na[3] == nb[3]
