"""Re-judge every committed preflight evidence file and snapshot, and every real capture tree, and print
each gate's verdict and text: run it on two checkouts and diff the outputs to show a change left every
verdict as it was.

    python3 benchmarks/rejudge_corpus.py > after.txt     (in each checkout; then: diff before.txt after.txt)

Each input is judged in a fresh `python3 -m rdmacheck preflight` process with the same clean environment,
the reference .env (docker/.env.example) and the built-in profile: evidence files with --facts, snapshots
and capture trees with --root.  One line per (input, gate): status, observed, expected, remedy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CAPTURES = REPO.parent / "shared" / "captures"


def inputs() -> list[tuple[str, Path]]:
    out = []
    for p in sorted((REPO / "tests" / "data").glob("*.json")) + sorted((REPO / "benchmarks" / "results").glob("*.json")):
        try:
            kind = json.loads(p.read_text()).get("kind")
        except (ValueError, AttributeError):
            continue
        if kind == "preflight":
            out.append(("--facts", p))
    for p in sorted((REPO / "tests" / "data").glob("*.tar.gz")):
        out.append(("--root", p))
    if (CAPTURES / "sysfs").is_dir():
        for p in sorted((CAPTURES / "sysfs").iterdir()):
            if p.is_dir():
                out.append(("--root", p))
    return out


def judge(flag: str, path: Path, tmp: Path) -> dict:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "HOME": str(tmp), "LANG": "C.UTF-8"}
    out = tmp / "ev.json"
    p = subprocess.run([sys.executable, "-m", "rdmacheck", "preflight", flag, str(path), "--env",
                        str(REPO / "docker" / ".env.example"), "--json", str(out), "--quiet"],
                       capture_output=True, text=True, env=env, cwd=tmp, timeout=600)
    if not out.is_file():
        return {"exit": p.returncode, "stderr": p.stderr.strip()}
    ev = json.loads(out.read_text())
    out.unlink()
    return {"exit": p.returncode, "results": [(r["id"], r["status"], r.get("observed"), r.get("expected"),
                                               r.get("remedy")) for r in ev["results"]]}


def main() -> int:
    n = 0
    with tempfile.TemporaryDirectory() as t:
        for flag, path in inputs():
            name = str(path.relative_to(REPO) if path.is_relative_to(REPO) else path.relative_to(REPO.parent))
            got = judge(flag, path, Path(t))
            print(f"{name} {flag}: exit {got['exit']}" + (f" ({got['stderr']})" if "stderr" in got else ""))
            for row in got.get("results", []):
                print("   ", json.dumps(row, ensure_ascii=False))
                n += 1
    print(f"# {n} verdicts", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
