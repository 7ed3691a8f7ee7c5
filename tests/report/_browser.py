"""A headless Chromium driven over the DevTools protocol, for the report's browser test.

Only what the test needs: open a page in a viewport of a given width, wait for its load
event, evaluate an expression, take a full-page screenshot, and collect everything the
page reported as an error (console errors, uncaught exceptions, failed loads).

The browser is ``$EPCSIM_BROWSER`` or the first of ``chromium``, ``chromium-browser``,
``google-chrome`` on ``PATH`` (Debian's ``chromium`` package in CI, ``.ci/run``).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import websocket

#: flags for a quiet, reproducible headless browser in a container (no sandbox: CI runs
#: as root; no network services, no GPU)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--remote-debugging-port=0",
    "about:blank",
)
STARTUP_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 60.0


def find_browser() -> str | None:
    """The browser executable to use, or None."""
    env = os.environ.get("EPCSIM_BROWSER")
    if env:
        return shutil.which(env) or (env if Path(env).is_file() else None)
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Page:
    """One tab, attached over a flattened DevTools session."""

    def __init__(self, browser: Browser, session: str) -> None:
        self._b = browser
        self.session = session
        #: error messages the page reported (console.error, exceptions, failed loads)
        self.errors: list[str] = []

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._b.send(method, params, session=self.session)

    def _on_event(self, msg: dict[str, Any]) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            self.errors.append(f"console.{p['type']}: {args}")
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.errors.append(f"exception: {d.get('text', '')} {d.get('exception', {})}")
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            self.errors.append(f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}")

    def open(self, url: str, width: int, height: int = 800) -> None:
        """Load *url* in a *width* × *height* CSS-pixel viewport; return after its load event."""
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        self._b.events.clear()
        self.send("Page.navigate", {"url": url})
        self._b.wait_event("Page.loadEventFired", session=self.session)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of *expression* in the page."""
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"evaluate failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def screenshot(self, path: Path) -> None:
        """Save the whole page (not only the viewport) as PNG."""
        m = self.send("Page.getLayoutMetrics")
        size = m.get("cssContentSize") or m["contentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        r = self.send(
            "Page.captureScreenshot",
            {"format": "png", "clip": clip, "captureBeyondViewport": True},
        )
        path.write_bytes(base64.b64decode(r["data"]))


class Browser:
    """A headless browser process and its DevTools websocket."""

    def __init__(self, executable: str) -> None:
        self._dir = tempfile.TemporaryDirectory(
            prefix="epcsim-browser-", ignore_cleanup_errors=True
        )
        profile = Path(self._dir.name)
        self._proc = subprocess.Popen(
            [executable, f"--user-data-dir={profile}", *FLAGS],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        lines: list[str] = []
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self.close()
                raise RuntimeError(f"{executable} exited with status {self._proc.returncode}")
            with contextlib.suppress(OSError):
                lines = port_file.read_text().split()
            if len(lines) >= 2:
                break
            time.sleep(0.1)
        else:
            self.close()
            raise RuntimeError(f"{executable} did not open its DevTools port")
        try:
            # no Origin header: the browser only accepts origins it was told about
            self._ws = websocket.create_connection(
                f"ws://127.0.0.1:{lines[0]}{lines[1]}",
                timeout=COMMAND_TIMEOUT_S,
                suppress_origin=True,
            )
        except Exception:
            self.close()
            raise
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self._pages: dict[str, Page] = {}

    def _recv(self) -> dict[str, Any]:
        msg = json.loads(self._ws.recv())
        if "method" in msg:
            self.events.append(msg)
            page = self._pages.get(msg.get("sessionId", ""))
            if page is not None:
                page._on_event(msg)
        return msg

    def send(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None
    ) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are kept)."""
        i = next(self._ids)
        msg: dict[str, Any] = {"id": i, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._ws.send(json.dumps(msg))
        while True:
            r = self._recv()
            if r.get("id") == i:
                if "error" in r:
                    raise RuntimeError(f"{method}: {r['error']}")
                return r.get("result", {})

    def wait_event(self, method: str, *, session: str | None = None) -> dict[str, Any]:
        def match(m: dict[str, Any]) -> bool:
            return m.get("method") == method and (session is None or m.get("sessionId") == session)

        for m in self.events:
            if match(m):
                return m
        while True:
            m = self._recv()
            if match(m):
                return m

    @contextlib.contextmanager
    def page(self) -> Iterator[Page]:
        """A new tab, closed afterwards."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        p = Page(self, session)
        self._pages[session] = p
        try:
            yield p
        finally:
            del self._pages[session]
            self.send("Target.closeTarget", {"targetId": target})

    def close(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        # Chromium's helper processes may still write into the profile for a moment
        # after the browser exits ("Directory not empty: 'Default'" on a loaded CI run)
        for _ in range(50):
            try:
                shutil.rmtree(self._dir.name)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
        self._dir.cleanup()
