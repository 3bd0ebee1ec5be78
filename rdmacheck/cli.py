"""The ``rdmacheck`` command line.

Each sub-command lives in ``rdmacheck/commands/<name>.py`` and exposes
``add_arguments(parser)`` and ``run(args) -> int``.  Command modules import
their heavy dependencies (torch, pandas, ray) inside ``run`` so that
``rdmacheck preflight`` starts fast and never imports torch.

Exit codes, for every command: 0 all gates passed, 1 a gate failed,
2 usage or input error (one line on stderr, no traceback), 3 internal error
(one line naming the exception and the crash report saved by rdmacheck.util.crash).
docs/failure-semantics.md says what is written on each kind of failure.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from . import __version__
from rdmacheck.util.errors import Terminated, UsageError

# (name, module, one-line help).  Order is the order --help shows.
COMMANDS = [
    ("preflight", "preflight", "check this node's RDMA, network, limits, GPU and NCCL setup (exit 0 only if every gate passes)"),
    ("snapshot", "snapshot", "capture what preflight reads into a .tar.gz, to replay later with --root"),
    ("bench", "bench", "NCCL/gloo collective bandwidth sweeps (nccl-tests numbers) with a bus-bandwidth gate"),
    ("link", "link", "two-node RDMA probe: verbs bandwidth and latency between this node's HCAs and a peer's, as NCCL sets them up"),
    ("counters", "counters", "RDMA port and netdev counter deltas and rates (bytes, packets, errors, retransmits, pause/CNP/ECN)"),
    ("report", "report", "render evidence JSON (and nccl-tests output) into one self-contained HTML report"),
    ("launch", "launch", "start the Ray head/worker container only after every gate has passed"),
    ("cluster", "cluster", "fleet acceptance through Ray: every node's gates, pairwise links and the bench, one report"),
    ("diff", "diff", "compare two nodes, or one node before and after: every gate-relevant fact and verdict (exit 1 on drift)"),
    ("watch", "watch", "re-run the node gates every S seconds and serve them (and RDMA counters) as Prometheus metrics"),
]

EPILOG = """\
exit codes (every command):
  0  every gate passed
  1  a gate failed (or could not be judged once running: a rank died, a node went silent)
  2  usage or input error: one line naming the problem and the fix; no output file was replaced
  3  internal error: one line naming it and the crash report saved under
     $XDG_STATE_HOME/rdmacheck/ (else the temp folder); please report it
  see docs/failure-semantics.md

quick start:
  rdmacheck preflight --env docker/.env            gate this node
  rdmacheck bench --sizes 1K..1G                   measure collective bandwidth
  rdmacheck report reports/*.json -o reports/acceptance.html

Run 'rdmacheck COMMAND --help' for each command's options.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Description and epilog keep their lines (examples, tables), but a line wider than the terminal is
    wrapped on words, its continuation indented under its text: the terminal broke words mid-way at 80
    columns.  An example command is wrapped at its spaces and stays a readable, copyable line set."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        # an option's help: on spaces only ("gate-relevant", "self-contained" stay whole)
        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_long_words=False,
                             break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import re
        import textwrap

        out = []
        for line in text.splitlines():
            if len(indent) + len(line) <= width or not line.strip():
                out.append(indent + line)
                continue
            lead = re.match(r"\s*", line).group(0)
            # a two-column line (command, then its note after 2+ spaces): continue under the note
            m = re.match(r"(\s*\S.*?\s{2,})\S", line)
            hang = " " * len(m.group(1)) if m and len(m.group(1)) < width // 2 else lead + "    "
            out.extend(textwrap.wrap(line.strip(), width=max(20, width - len(indent)), initial_indent=indent + lead,
                                     subsequent_indent=indent + hang, break_long_words=False,
                                     break_on_hyphens=False))
        return "\n".join(out)


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser.  With ``only``, other commands get a stub parser so their
    modules are not imported: start-up time is paid for the command that runs."""
    parser = _Parser(
        prog="rdmacheck",
        description="Pre-flight diagnostics and RDMA/NCCL benchmarks for multi-node GPU inference clusters.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"rdmacheck {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module, help_ in COMMANDS:
        if only and name != only:
            sub.add_parser(name, help=help_)
            continue
        try:
            mod = importlib.import_module(f".commands.{module}", __package__)
        except ModuleNotFoundError as e:
            if e.name and e.name.endswith(f"commands.{module}"):
                continue  # command not built yet
            raise
        p = sub.add_parser(
            name,
            help=help_,
            description=getattr(mod, "DESCRIPTION", help_),
            epilog=getattr(mod, "EPILOG", None),
            formatter_class=_Formatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


# errno values that say the machine cannot take the output (full disk, quota, I/O error, a closed or full
# terminal), not that rdmacheck is broken: one line and exit 1 (the run could not finish), no crash report
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS, errno.EPIPE}


def _tolerant_streams() -> None:
    """A terminal or pipe whose encoding is not UTF-8 (PYTHONIOENCODING=ascii, a latin-1 locale) prints an
    escape for what it cannot show instead of raising UnicodeEncodeError after the evidence was written."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            pass


def _output_failed(e: OSError) -> int:
    try:  # the interpreter's last flush of a full stdout must not print a second error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    except OSError:
        pass
    try:
        print(f"rdmacheck: error: cannot write the output: {e.strerror or e} (the run could not finish)",
              file=sys.stderr)
    except OSError:
        pass
    return 1


def main(argv: list[str] | None = None) -> int:
    _tolerant_streams()
    try:
        argv = sys.argv[1:] if argv is None else argv
        names = {c[0] for c in COMMANDS}
        first = next((a for a in argv if not a.startswith("-")), None)
        parser = build_parser(first if first in names else None)
        args = parser.parse_args(argv)
        if not getattr(args, "_run", None):
            parser.print_help()
            return 2
        return int(args._run(args) or 0)
    except UsageError as e:
        from rdmacheck.util.sanitize import clean_text

        print(clean_text(f"rdmacheck: error: {e}", one_line=True), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rdmacheck: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("rdmacheck: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except BrokenPipeError:
        return 1
    except OSError as e:
        if e.errno not in _OUTPUT_ERRNOS:
            from rdmacheck.util.crash import report_internal_error

            return report_internal_error(e, argv)
        return _output_failed(e)
    except SystemExit:
        raise  # --help, --version
    except BaseException as e:  # a bug: exit 3, the traceback in a file, not on the terminal
        from rdmacheck.util.crash import report_internal_error

        return report_internal_error(e, argv)
