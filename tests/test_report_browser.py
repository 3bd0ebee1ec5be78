"""The report in a real browser: headless Chromium (Debian's package) driven over the DevTools
protocol on --remote-debugging-pipe, with nothing but the standard library.

* networking off: Chromium runs in an empty network namespace (unshare -n) when this
  machine allows it, and the page's network is emulated offline in any case;
* every request the page makes is recorded (Network.requestWillBeSent): only the page's
  own file:// URL and data: URLs are allowed;
* the plots render: each plot <img> decoded, and its screenshot area is not blank;
* hostile host/interface names render inert: asserted on the live DOM (no injected
  <script>/<img>, no dialog opened, the text shows as text), and on --dump-dom output.

Screenshots are kept under reports/ci-artifacts/ for CI.
"""

from __future__ import annotations

import base64
import fcntl
import html.parser
import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, require, run_cli
from rdmacheck.evidence.model import Evidence, Result

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "reports" / "ci-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--mute-audio",
         "--hide-scrollbars", "--disable-dev-shm-usage"]
HOSTILE_HOST = "<script>alert(1)</script>"
HOSTILE_IF = '"><img src=x onerror=alert(1)>'


def _can_unshare_net() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0


class Chrome:
    """Chromium with the DevTools protocol on fds 3 (commands in) / 4 (replies out)."""

    def __init__(self, user_data_dir: str):
        cmd_r, cmd_w = os.pipe()
        out_r, out_w = os.pipe()
        # move the child's ends out of the way so dup2 onto 3/4 cannot clobber them
        hi_cmd_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 100)
        hi_out_w = fcntl.fcntl(out_w, fcntl.F_DUPFD, 100)
        os.close(cmd_r)
        os.close(out_w)

        def child() -> None:
            os.dup2(hi_cmd_r, 3)
            os.dup2(hi_out_w, 4)

        argv = [CHROMIUM, *FLAGS, f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe", "about:blank"]
        self.isolated = _can_unshare_net()
        if self.isolated:
            argv = ["unshare", "-n", *argv]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=child, pass_fds=(3, 4))
        os.close(hi_cmd_r)
        os.close(hi_out_w)
        self.w = cmd_w
        self.r = out_r
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no DevTools message from chromium")
            import select

            ready, _, _ = select.select([self.r], [], [], left)
            if ready:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        mid = self.next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == mid:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        for e in self.events:
            if e.get("method") == method:
                return e
        deadline = time.monotonic() + timeout
        while True:
            m = self._read_message(deadline)
            self.events.append(m)
            if m.get("method") == method:
                return m

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._read_message(deadline))
        except TimeoutError:
            pass

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self.w, self.r):
            try:
                os.close(fd)
            except OSError:
                pass


def open_page(path: Path, tmp: Path, width: int = 1280, height: int = 900):
    c = Chrome(str(tmp / "profile"))
    try:
        target = c.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = c.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for m in ("Network.enable", "Page.enable", "Log.enable", "Runtime.enable"):
            c.send(m, session=s)
        c.send("Network.emulateNetworkConditions",
               {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}, session=s)
        c.send("Emulation.setDeviceMetricsOverride",
               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 700}, session=s)
        c.send("Page.navigate", {"url": path.resolve().as_uri()}, session=s)
        c.wait_event("Page.loadEventFired", timeout=60)
        c.pump(1.0)  # let late events (image decodes, console) arrive
    except BaseException:
        c.close()
        raise
    return c, s


def evaluate(c: Chrome, s: str, expr: str):
    r = c.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=s)
    if "exceptionDetails" in r:
        raise AssertionError(f"evaluate failed: {r['exceptionDetails']}")
    return r["result"].get("value")


def requests_made(c: Chrome) -> list[str]:
    return [e["params"]["request"]["url"] for e in c.events if e.get("method") == "Network.requestWillBeSent"]


def nonblank_fraction(png: bytes) -> float:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(png), format="png")[..., :3]
    return float(((img < 0.92).any(axis=-1)).mean())


@pytest.fixture
def chromium():
    require(CHROMIUM is not None, "headless Chromium not installed", "chromium")
    return CHROMIUM


def _report(tmp: Path, evidence: list[Path], *extra: str) -> Path:
    out = tmp / "acceptance.html"
    r = run_cli("report", *map(str, evidence), "-o", str(out), *extra, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    return out


def _save(name: str, png: bytes) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    p = ARTIFACTS / name
    p.write_bytes(png)
    return p


def test_report_renders_offline_with_plots(chromium, tmp_path, captures):
    # real inputs: the real preflight on this machine, two real nccl-tests captures
    pf = tmp_path / "preflight.json"
    r = run_cli("preflight", "--json", str(pf), timeout=120)
    assert r.returncode in (0, 1) and pf.is_file(), r.stderr
    html = _report(tmp_path, [pf],
                   "--import", str(captures / "text" / "nccl-tests-allreduce-h100x2-nvlink-reference.txt"),
                   "--import", str(captures / "text" / "nccl-tests-allgather-gke-a3-megagpu-2node.txt"))
    c, s = open_page(html, tmp_path)
    try:
        page_url = html.resolve().as_uri()
        urls = requests_made(c)
        assert page_url in urls  # the recorder works: it saw the page itself
        leaked = [u for u in urls if u != page_url and not u.startswith("data:")]
        assert leaked == [], f"the page made requests: {leaked}"
        logs = [e["params"]["entry"] for e in c.events if e.get("method") == "Log.entryAdded"]
        assert not [l for l in logs if "Content Security Policy" in l.get("text", "")], logs
        plots = evaluate(c, s, """JSON.stringify([...document.querySelectorAll('figure.plot img')].map(i => {
            const r = i.getBoundingClientRect();
            return {ok: i.complete && i.naturalWidth > 0, x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height};
        }))""")
        plots = json.loads(plots)
        assert len(plots) == 2  # all_reduce and all_gather
        for i, p in enumerate(plots):
            assert p["ok"], "plot image did not decode"
            assert p["w"] > 300 and p["h"] > 80
            shot = c.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                     "clip": {**{k: p[k] for k in ("x", "y")}, "width": p["w"],
                                                              "height": p["h"], "scale": 1}}, session=s)
            png = base64.b64decode(shot["data"])
            _save(f"report-plot-{i}.png", png)
            frac = nonblank_fraction(png)
            assert frac > 0.02, f"plot {i} looks blank ({frac:.3%} drawn pixels)"
        full = base64.b64decode(c.send("Page.captureScreenshot", {"format": "png"}, session=s)["data"])
        _save("report-desktop.png", full)
        assert nonblank_fraction(full) > 0.02
        banner = evaluate(c, s, "document.getElementById('verdict').innerText")
        assert banner.startswith("FAIL") and "limits.memlock" in banner
        # printed: the print stylesheet unfolds the per-node details; Chromium's own PDF is kept
        c.send("Emulation.setEmulatedMedia", {"media": "print"}, session=s)
        hidden = evaluate(c, s, "[...document.querySelectorAll('details table')].filter(t => t.offsetHeight === 0).length")
        assert hidden == 0, f"{hidden} folded table(s) would not print"
        pdf = base64.b64decode(c.send("Page.printToPDF", {"printBackground": False}, session=s, timeout=60)["data"])
        assert pdf.startswith(b"%PDF")
        _save("report-print.pdf", pdf)
    finally:
        c.close()
    # a phone-sized viewport: the page stays within the width (tables scroll inside their box)
    c, s = open_page(html, tmp_path, width=390, height=844)
    try:
        overflow = evaluate(c, s, "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 2, f"page is {overflow}px wider than a phone screen"
        _save("report-phone.png", base64.b64decode(c.send("Page.captureScreenshot", {"format": "png"}, session=s)["data"]))
    finally:
        c.close()


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _hostile_evidence(tmp: Path) -> list[Path]:
    paths = []
    for i, host in enumerate((HOSTILE_HOST, HOSTILE_IF)):
        ev = Evidence(kind="preflight", host=host, results=[
            Result("rdma.netdev", "fail", observed=f"netdev {HOSTILE_IF} is down", expected=f"{HOSTILE_HOST} up",
                   remedy=f"ip link set {HOSTILE_IF} up", details={"netdev": HOSTILE_IF}),
            Result("rdma.mtu", "pass", observed="9000", expected="9000",
                   waiver={"reason": HOSTILE_HOST, "user": HOSTILE_IF, "time": "2026-11-27T12:00:00+00:00"}),
        ], context={"config": {"env": {"NCCL_SOCKET_IFNAME": HOSTILE_IF, "NCCL_IB_HCA": HOSTILE_HOST if i else "mlx5_0"}},
                    "facts": {"ports": [{"port": f"{HOSTILE_HOST}:1", "netdev": HOSTILE_IF, "netdev_mtu": 9000 + i,
                                         "fw_ver": HOSTILE_IF, "active_mtu": 4096,
                                         "gid": {"type": HOSTILE_HOST, "ipv4": "192.168.100.1"}}],
                              "netdevs": {HOSTILE_IF: {"mtu": 9000, "ipv4": ["192.168.100.1/24"]}}}})
        p = tmp / f"hostile-{i}.json"
        p.write_text(ev.to_json())
        paths.append(p)
    bench = Evidence(kind="bench", host=HOSTILE_HOST, results=[
        Result("bench.transport", "fail", observed=f"NET/Socket on {HOSTILE_IF}", remedy=HOSTILE_HOST,
               details={"interface": HOSTILE_IF})],
        context={"backend": HOSTILE_HOST}, records=[
            {"op": HOSTILE_HOST, "bytes": b, "busbw": b / 1e5, "algbw": b / 1e5, "time_us": 10.0, "in_place": False,
             "backend": HOSTILE_IF} for b in (1024, 2048, 4096)])
    p = tmp / "hostile-bench.json"
    p.write_text(bench.to_json())
    paths.append(p)
    return paths


def test_hostile_strings_are_inert_in_the_dom(chromium, tmp_path):
    html = _report(tmp_path, _hostile_evidence(tmp_path), "--junit", str(tmp_path / "j.xml"))
    c, s = open_page(html, tmp_path)
    try:
        assert not [e for e in c.events if e.get("method") == "Page.javascriptDialogOpening"], "alert() ran"
        dom = json.loads(evaluate(c, s, """JSON.stringify({
            scripts: document.querySelectorAll('script').length,
            imgs: [...document.images].map(i => i.getAttribute('src').slice(0, 30)),
            onerror: document.querySelectorAll('[onerror]').length,
            text: document.body.innerText,
            title: document.title})"""))
        assert dom["scripts"] == 0
        assert dom["onerror"] == 0
        assert all(src.startswith("data:image/svg+xml") for src in dom["imgs"]), dom["imgs"]
        assert len(dom["imgs"]) == 1  # the one plot, and no injected image
        assert HOSTILE_HOST in dom["text"] and HOSTILE_IF in dom["text"]  # shown, as text
        leaked = [u for u in requests_made(c) if not u.startswith(("file:", "data:"))]
        assert leaked == []
        _save("report-hostile.png", base64.b64decode(c.send("Page.captureScreenshot", {"format": "png"}, session=s)["data"]))
    finally:
        c.close()
    # the same through --dump-dom: the serialised DOM after parsing holds no injected element
    argv = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", html.resolve().as_uri()]
    if _can_unshare_net():
        argv = ["unshare", "-n", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
    tags = _Tags()
    tags.feed(out)
    assert not [t for t, _ in tags.tags if t == "script"]
    assert [a.get("src", "")[:5] for t, a in tags.tags if t == "img"] == ["data:"]
    assert not [a for _, a in tags.tags if "onerror" in a]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
