"""The web page at ``/`` in a real headless browser (Chromium driven over the DevTools protocol): upload a photo,
read the legend, toggle a class, download the label PNG. Skipped only when no Chromium / Chrome is installed."""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
ws_client = pytest.importorskip("websockets.sync.client")

from PIL import Image  # noqa: E402

import hparse  # noqa: E402
from tests.conftest import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_browser() -> str | None:
    explicit = os.environ.get("HPARSE_BROWSER")
    return explicit if explicit else next(filter(None, map(shutil.which, BROWSERS)), None)


class DevTools:
    """A minimal Chrome DevTools Protocol client: one browser websocket, one page session (flat mode)."""

    def __init__(self, browser: str, profile: Path):
        self.proc = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                      "--disable-dev-shm-usage", "--remote-debugging-port=0",
                                      f"--user-data-dir={profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and len(port_file.read_text().split()) >= 2):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                pytest.fail("the browser did not open its DevTools port")
            time.sleep(0.1)
        port, path = port_file.read_text().split()[:2]
        self.stack = contextlib.ExitStack()
        self.ws = self.stack.enter_context(ws_client.connect(f"ws://127.0.0.1:{port}{path}", max_size=None,
                                                             open_timeout=30))
        self.ids = itertools.count(1)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, session: bool = False, timeout: float = 60, **params) -> dict:
        msg_id = next(self.ids)
        msg = {"id": msg_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]

    def page(self, method: str, **params) -> dict:
        return self.call(method, session=True, **params)

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        res = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise AssertionError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}")

    def upload(self, url: str, path: Path) -> None:
        """Open the page at ``url`` and choose ``path`` in its file input."""
        self.page("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && document.querySelectorAll('#model option').length > 0")
        root = self.page("DOM.getDocument")["root"]["nodeId"]
        node = self.page("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
        self.page("DOM.setFileInputFiles", nodeId=node, files=[str(path)])

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self.call("Browser.close", timeout=10)
                self.stack.close()
        except Exception:  # noqa: BLE001 - the browser may be gone already
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def service_url():
    """The service in a thread of this process (real uvicorn, free local port)."""
    from hparse.service import ServiceSettings, create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ServiceSettings()), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


@pytest.fixture()
def browser(tmp_path):
    path = find_browser()
    if path is None:
        pytest.skip("no Chromium / Chrome installed (apt-get install chromium, or set HPARSE_BROWSER)")
    devtools = DevTools(path, tmp_path / "profile")
    yield devtools
    devtools.close()


def test_upload_shows_legend_toggles_and_downloads_label(service_url, browser, tmp_path):
    photo = tmp_path / "person.jpg"
    im = Image.open(REPO / "examples" / "ccp_0002.jpg").convert("RGB")
    im.thumbnail((240, 240))
    im.save(photo, quality=92)
    parser = hparse.load("default")
    expected = parser.predict(str(photo))
    present = [parser.classes[c] for c in np.unique(expected) if c != 0]

    browser.page("Page.enable")
    browser.upload(service_url + "/", photo)
    state = browser.wait_for("['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state")
    assert state == "done", browser.js("document.getElementById('status').textContent")

    legend = browser.js("Array.from(document.querySelectorAll('#legend li')).map(li => [li.dataset.name, "
                        "getComputedStyle(li.querySelector('.swatch')).backgroundColor])")
    assert [name for name, _ in legend] == present
    palette = parser.meta.palette()
    for name, colour in legend:
        r, g, b = palette[parser.classes.index(name)]
        assert colour == f"rgb({r}, {g}, {b})", name

    before = browser.js("document.getElementById('view').toDataURL()")
    browser.js("document.querySelector('#legend li input').click()")
    assert browser.js("document.getElementById('view').toDataURL()") != before   # the first class's mask is off
    browser.js("document.getElementById('all').click()")
    assert browser.js("document.getElementById('view').toDataURL()") == before

    link = browser.js("[document.getElementById('download-label').href, "
                      "document.getElementById('download-label').download]")
    assert link[0].startswith("blob:") and link[1] == "person_label.png"
    png = browser.js(f"fetch('{link[0]}').then(r => r.arrayBuffer()).then(b => "
                     "btoa(Array.from(new Uint8Array(b), c => String.fromCharCode(c)).join('')))")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(png)))), expected)


def test_page_reports_a_bad_upload(service_url, browser, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("these are not pixels")
    browser.upload(service_url + "/", bad)
    assert browser.wait_for("document.body.dataset.state === 'error' && "
                            "document.getElementById('status').textContent").count("not an image") == 1
