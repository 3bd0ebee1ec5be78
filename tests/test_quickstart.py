"""The README's quick start, as a newcomer runs it: a clean clone, a fresh venv, the two lines exactly as written.

Nothing here is mocked: `git clone` of this repository at HEAD into a temporary folder, `python -m venv`
(no system site-packages), then the README's two command lines (parsed from README.md) through bash in
that venv.  pip reaches this machine's package index as configured.  The test line runs pytest: that
inner run sees RDMACHECK_QUICK_TESTS=1, so conftest leaves out the slow beds (they run in full in this
outer session) and this test itself, and it runs without CI=true (a newcomer's machine: beds that are
missing skip there with their install line).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, require_tool
from early import STARTED

pytestmark = pytest.mark.quickstart

README = REPO / "README.md"
# hang guards per line, not speed goals: ~4 minutes beside the light tests on a quiet 2-core machine,
# more beside a CPU hog
LINE_TIMEOUT = 1500


def quick_start_lines(text: str) -> list[str]:
    """The command lines of the README's ``## Quick start`` section: each ```sh block holds one."""
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```$", section, flags=re.S | re.M)
    lines = [[ln for ln in b.splitlines() if ln.strip()] for b in blocks]
    assert all(len(b) == 1 for b in lines), lines
    return [b[0] for b in lines]


def test_quick_start_is_two_lines_and_ci_runs_the_same_test_line():
    main, tests = quick_start_lines(README.read_text())
    assert "rdmacheck preflight" in main and main.startswith("python3 -m pip install -e . && ")
    assert "'.[dev]'" in tests and tests.endswith("python3 -m pytest -q")
    # .ci/run reads the test line from the README (its quick_start_line parses as this test does), never a copy
    ci = (REPO / ".ci" / "run").read_text()
    assert "quick_start_line 2" in ci and "python3 -m pytest -q" not in ci.replace("'", "")


def test_no_skip_message_suggests_a_bare_torch():
    """`pip install torch` without a version pulls the multi-GB CUDA build: no test or doc may suggest it."""
    bare = re.compile(r"pip install[^\n`'\"]*?\btorch\b(?!==)(?![\w.\[-])")
    hits = []
    for p in [*REPO.glob("tests/**/*.py"), *REPO.glob("rdmacheck/**/*.py"), README, *REPO.glob("docs/*.md")]:
        if p.name == "test_quickstart.py":
            continue
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            if bare.search(line):
                hits.append(f"{p.relative_to(REPO)}:{n}: {line.strip()}")
    assert not hits, hits


def _summary(out: str) -> dict[str, int]:
    line = next((ln for ln in reversed(out.splitlines()) if re.search(r"\d+ (passed|failed|error)", ln)), "")
    return {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected)", line)}


@dataclasses.dataclass
class QuickStartRun:
    """What the README's two lines did in a fresh venv of a clean clone."""
    main: subprocess.CompletedProcess
    tests: subprocess.CompletedProcess | None
    clone: Path
    venv: Path


def run_readme_lines(work: Path) -> QuickStartRun:
    """Clone this checkout's HEAD into ``work``, make a fresh venv, and run the README's two lines there.

    conftest starts it as soon as collection ends (tests/early.py), beside the light tests; the test
    below judges what it returns (and runs it itself when no early bed was started).
    """
    main, tests = quick_start_lines(README.read_text())
    clone = work / REPO.name
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120,
                   capture_output=True)
    shared = REPO.parent / "shared"
    if shared.is_dir():
        (work / "shared").symlink_to(shared)  # the captures live beside a checkout, never inside it
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # The venv as `. venv/bin/activate` leaves it, and nothing of this session's own set-up: no
    # PYTHONPATH (the clone must run its own code), no CI (a newcomer's machine).
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "CI", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("PYTEST_")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               RDMACHECK_QUICK_TESTS="1", NO_COLOR="1")

    def run(line: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", line], cwd=clone, env=env, capture_output=True, text=True,
                              timeout=LINE_TIMEOUT)

    m = run(main)
    # the test line only after the main line worked: its verdict would judge a broken install
    t = run(tests) if m.returncode in (0, 1) else None
    return QuickStartRun(m, t, clone, venv)


def test_readme_lines_work_in_a_fresh_venv_from_a_clean_clone(tmp_path):
    require_tool("git", "apt-get install git")
    qs = STARTED["quickstart"].result() if "quickstart" in STARTED else run_readme_lines(tmp_path / "w")
    m = qs.main
    out = m.stdout + m.stderr
    # exit 1 is honest on a machine without RDMA; 2 (usage) or 3 (internal error) never
    assert m.returncode in (0, 1), out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    assert (qs.clone / "reports" / "preflight.json").is_file()
    assert shutil.which("rdmacheck", path=str(qs.venv / "bin")), "the install put no rdmacheck on the venv's PATH"

    t = qs.tests
    assert t is not None
    out = t.stdout + t.stderr
    counts = _summary(out)
    assert t.returncode == 0, out[-6000:]
    assert counts.get("passed", 0) > 0 and counts.get("failed", 0) == 0 and not counts.get("error") \
        and not counts.get("errors"), (counts, out[-3000:])
