"""Open a tagged ONNX file with its node-data overlays in Model Explorer, in a headless Chromium, and screenshot it.

Model Explorer (``ai-edge-model-explorer``) is a Flask server and a web app that draws the graph with WebGL; its
ONNX adapter (``model-explorer-onnx``) is an extension the server loads only when named (``--extensions``; without
it the model list says "Unsupported model format"). The browser is driven over the Chrome DevTools Protocol with
``websockets`` alone (no chromedriver): navigate to the app's URL, wait until the graph is drawn, expand every
layer, take a PNG. Also runnable by hand:
``python -m tests.explorer_browser MODEL.onnx NODE_DATA.json OUT.png [WIDTHxHEIGHT]``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
VIEWPORT = (1280, 800)


def find_browser() -> str | None:
    """The path of a Chromium-family browser on this machine, or None."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def explorer_url(port: int, onnx_path: str | os.PathLike, node_data: list[str | os.PathLike]) -> str:
    """The app's URL that opens `onnx_path` with `node_data` overlays, as ``model-explorer`` prints it."""
    data = {
        "models": [{"url": str(Path(onnx_path).resolve())}],
        "nodeData": [str(Path(p).resolve()) for p in node_data],
        "nodeDataTargets": ["" for _ in node_data],
    }
    return f"http://127.0.0.1:{port}/?data={urllib.parse.quote(json.dumps(data))}"


@contextlib.contextmanager
def explorer_server(log: Path, timeout: float = 120) -> Iterator[int]:
    """A Model Explorer server with the ONNX adapter, on a free port; yields the port. Its output goes to `log`."""
    port = free_port()
    command = [sys.executable, "-m", "model_explorer", "--extensions=model_explorer_onnx", "--no_open_in_browser"]
    command += ["--host=127.0.0.1", f"--port={port}", "--skip_health_check"]
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/check_health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"model-explorer did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield port
    finally:
        server.terminate()
        server.wait(30)


class Page:
    """One browser tab over the DevTools Protocol; console errors seen are kept in `console`."""

    def __init__(self, socket_, viewport: tuple[int, int]):
        self.socket, self.viewport, self.next_id, self.console = socket_, viewport, 0, []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if message.get("method") == "Runtime.exceptionThrown":
                self.console.append(message["params"]["exceptionDetails"].get("text", ""))
            elif message.get("method") == "Log.entryAdded" and message["params"]["entry"]["level"] == "error":
                self.console.append(message["params"]["entry"]["text"])

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return True
            time.sleep(0.5)
        return False


@contextlib.contextmanager
def browser_page(browser: str, viewport: tuple[int, int] = VIEWPORT) -> Iterator[Page]:
    """A headless browser (software WebGL) with one tab of `viewport` pixels, closed afterwards."""
    from websockets.sync.client import connect

    profile = tempfile.mkdtemp(prefix="modelexport-chromium-")
    width, height = viewport
    command = [browser, "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--enable-unsafe-swiftshader"]
    command += [f"--window-size={width},{height}", "--remote-debugging-port=0", f"--user-data-dir={profile}"]
    process = subprocess.Popen([*command, "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = Path(profile, "DevToolsActivePort")
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{browser} did not start its DevTools endpoint")
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        url = next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]
        with connect(url, max_size=None, open_timeout=30) as socket_:
            page = Page(socket_, viewport)
            for domain in ("Runtime", "Log", "Page"):
                page.call(f"{domain}.enable")
            metrics = dict(width=width, height=height, deviceScaleFactor=1, mobile=False)
            page.call("Emulation.setDeviceMetricsOverride", **metrics)
            yield page
    finally:
        process.terminate()
        process.wait(30)
        shutil.rmtree(profile, ignore_errors=True)


# The graph is drawn once the toolbar's "expand all layers" exists and the model list is gone; node data is loaded
# once its provider is listed in the side panel.
DRAWN = "!!document.querySelector('.expand-all') && !!document.querySelector('canvas')"
OVERLAID = "document.body.innerText.includes({name!r})"


def screenshot(page: Page, url: str, out: Path, overlay_name: str | None = None, timeout: float = 90) -> Path:
    """Open `url`, wait for the graph (and the overlay called `overlay_name`), expand every layer, write a PNG."""
    page.call("Page.navigate", url=url)
    if not page.wait_for(DRAWN, timeout):
        text = page.evaluate("document.body.innerText.slice(0, 500)")
        raise RuntimeError(
            f"the graph was not drawn within {timeout:.0f} s; the page says: {text!r}; console: {page.console[-3:]}"
        )
    if overlay_name and not page.wait_for(OVERLAID.format(name=overlay_name), timeout):
        raise RuntimeError(f"the node data {overlay_name!r} was not listed; console: {page.console[-3:]}")
    x, y = page.evaluate(
        "(r => [r.x + r.width / 2, r.y + r.height / 2])(document.querySelector('.expand-all').getBoundingClientRect())"
    )
    for kind, at in (("mouseMoved", (x, y)), ("mousePressed", (x, y)), ("mouseReleased", (x, y))):
        page.call("Input.dispatchMouseEvent", type=kind, x=at[0], y=at[1], button="left", clickCount=1)
    page.call("Input.dispatchMouseEvent", type="mouseMoved", x=page.viewport[0] // 3, y=page.viewport[1] - 5)
    time.sleep(3)  # the relayout and its animation; the button's tooltip fades
    out.write_bytes(base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"]))
    return out


def main(argv: list[str]) -> int:
    onnx_path, node_data, out, *size = argv
    viewport = tuple(int(v) for v in size[0].split("x")) if size else VIEWPORT  # taller: a long graph larger
    browser = find_browser()
    if browser is None:
        print(f"no browser found (looked for {', '.join(BROWSERS)})", file=sys.stderr)
        return 2
    name = json.loads(Path(node_data).read_text()).get("name")
    log = Path(out).with_suffix(".server.log")
    with explorer_server(log) as port, browser_page(browser, viewport) as page:
        screenshot(page, explorer_url(port, onnx_path, [node_data]), Path(out), name)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
