"""Headless Chromium driven over the DevTools protocol on a pipe (standard library only).

`render(url, width)` opens the page at a phone-like viewport and returns what the browser
saw: the page's text, every image's load state, the figure cells (`data-key` /
`data-value`), the file to ship, console messages and errors, and a PNG screenshot.
Chromium reads commands on fd 3 and writes replies on fd 4, each a JSON text ending in NUL.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
_PROBE = """(() => ({
  text: document.body.innerText,
  width: document.documentElement.scrollWidth,
  images: Array.from(document.images).map(i => ({
    alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})),
  cells: Array.from(document.querySelectorAll('tr[data-file] td[data-key]')).map(td => ({
    table: td.closest('table').dataset.table || '',
    file: td.parentElement.dataset.file, key: td.dataset.key,
    value: JSON.parse(td.dataset.value), text: td.innerText})),
  ship: Array.from(document.querySelectorAll('[data-ship]')).map(d => d.dataset.ship),
}))()"""


def chromium() -> str | None:
    """The Chromium executable on PATH, if any."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Rendered:
    """What the browser saw."""

    text: str
    width: int
    images: list[dict[str, Any]]
    cells: list[dict[str, Any]]
    ship: list[str]
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    screenshot: bytes = b""


def _place(read_end: int, write_end: int) -> None:
    """In the child: the command pipe on fd 3, the reply pipe on fd 4."""
    high_read, high_write = os.dup(read_end), os.dup(write_end)
    os.dup2(high_read, 3)
    os.dup2(high_write, 4)


class _Pipe:
    """One DevTools session over fds 3 / 4 of a Chromium child."""

    def __init__(self, executable: str) -> None:
        to_chrome_r, self._write = os.pipe()
        self._read, from_chrome_w = os.pipe()
        self.process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            # The child's fds 3 and 4 become the pipe ends (kept open past close_fds).
            pass_fds=(3, 4),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: _place(to_chrome_r, from_chrome_w),
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> Any:
        """Send one command and wait for its reply (events that arrive meanwhile are kept)."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(self._receive())
        raise TimeoutError(method)

    def _receive(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._write)
        os.close(self._read)


def render(url: str, *, width: int = 390, height: int = 844, full_page: bool = True) -> Rendered:
    """Load `url` in headless Chromium at width x height and read the page back."""
    executable = chromium()
    if executable is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    pipe = _Pipe(executable)
    try:
        target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True},
            session=session,
        )
        pipe.send("Page.navigate", {"url": url}, session=session)
        pipe.wait_event("Page.loadEventFired")
        probe = pipe.send(
            "Runtime.evaluate", {"expression": _PROBE, "returnByValue": True}, session=session
        )["result"]["value"]
        shot = pipe.send(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": full_page},
            session=session,
        )
        console, errors = _messages(pipe.events)
        return Rendered(
            text=probe["text"],
            width=probe["width"],
            images=probe["images"],
            cells=probe["cells"],
            ship=probe["ship"],
            console=console,
            errors=errors,
            screenshot=base64.b64decode(shot["data"]),
        )
    finally:
        pipe.close()


def _messages(events: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Console output, and the errors among it (console.error, exceptions, error logs)."""
    console, errors = [], []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            console.append(text)
            if params.get("type") in ("error", "assert"):
                errors.append(text)
        elif method == "Runtime.exceptionThrown":
            errors.append(str(params.get("exceptionDetails", {}).get("text")))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            console.append(str(entry.get("text")))
            if entry.get("level") == "error":
                errors.append(f"{entry.get('source')}: {entry.get('text')}")
    return console, errors
