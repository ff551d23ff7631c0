"""The live view: frames encoded only while watched, the page in Debian's headless Chromium showing the
stream with boxes, and the page reachable on its bind address only.

Chromium is driven through chromedriver's W3C WebDriver HTTP interface with the standard library, so
no Selenium is needed; setup.sh --dev installs both Debian packages.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from helpers import Broker, free_port, wait_until
from test_service import ServiceProcess

from edge.config import ConfigError, PreviewConfig
from edge.preview import LiveView, PreviewServer
from edge.tools.annotate import COLOURS
from edge.tools.demo import DEMO_CLIP
from edge.vision.tracker import Track

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--window-size=1200,700",
]  # fmt: skip
# Where a run with EMOTION_EDGE_SCREENSHOT=docs/live-view.png puts the picture docs/home-assistant.md shows.
SCREENSHOT_ENV = "EMOTION_EDGE_SCREENSHOT"
# Box colours that cannot be confused with the demo clip's grey faces and grey-blue background.
VIVID = [np.array(bgr, dtype=np.int16) for name, bgr in COLOURS.items() if name != "neutral"]


def vivid_pixels(image: np.ndarray) -> int:
    """Pixels within 30 per channel of a box colour other than neutral's grey."""
    pixels = image.astype(np.int16)
    return int(sum((np.abs(pixels - colour).max(axis=2) <= 30).sum() for colour in VIVID))


def test_frames_are_encoded_only_while_someone_watches() -> None:
    live = LiveView("testpi")
    image = np.full((120, 160, 3), 90, np.uint8)
    track = Track(1, (10, 10, 50, 50), "happy", 0.9, {}, 0.0, 0.0, np.zeros(7))
    live.frame(image, [track])
    assert live.encoded == 0 and live.next_frame(0, timeout=0.05) is None
    live.watching(+1)
    live.frame(image, [track])
    got = live.next_frame(0, timeout=1)
    assert got is not None and live.encoded == 1
    decoded = cv2.imdecode(np.frombuffer(got[1], np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and vivid_pixels(decoded) > 100, "the track's box is drawn on the frame"
    live.watching(-1)
    time.sleep(0.15)  # past the rate limit, so only the missing viewer can stop the next encoding
    live.frame(image, [track])
    assert live.encoded == 1


class WebDriver:
    """Just enough of W3C WebDriver over HTTP: a session, navigation, a script, a screenshot."""

    def __init__(self, tmp_path: Path) -> None:
        chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
        if chromium is None or driver is None:
            pytest.skip("chromium or chromium-driver not installed (./setup.sh --dev installs them)")
        self.port = free_port()
        self.process = subprocess.Popen([driver, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)  # fmt: skip
        wait_until(self._up, 20, "chromedriver to listen")
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]
        options = {"binary": chromium, "args": flags}
        capabilities = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
        self.session = self.call("POST", "/session", {"capabilities": capabilities})["sessionId"]

    def _up(self) -> bool:
        try:
            self.call("GET", "/status")
        except OSError:
            return False
        return True

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def open(self, url: str) -> None:
        self.call("POST", f"/session/{self.session}/url", {"url": url})

    def script(self, source: str) -> Any:
        return self.call("POST", f"/session/{self.session}/execute/sync", {"script": source, "args": []})

    def screenshot(self) -> np.ndarray:
        png = base64.b64decode(self.call("GET", f"/session/{self.session}/screenshot"))
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None, "the screenshot is not a PNG"
        return image

    def close(self) -> None:
        try:
            self.call("DELETE", f"/session/{self.session}")
        finally:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    driver = WebDriver(tmp_path)
    yield driver
    driver.close()


@pytest.fixture
def live_service(edge_env: dict[str, str]) -> Iterator[Callable[..., ServiceProcess]]:
    started: list[ServiceProcess] = []

    def start(broker_port: int, preview_port: int) -> ServiceProcess:
        flags = ["--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker_port), "--device-id", "testpi",
                 "--source", str(DEMO_CLIP), "--loop"]  # fmt: skip
        env = {**edge_env, "EMOTION_EDGE_PREVIEW_ENABLED": "true", "EMOTION_EDGE_PREVIEW_PORT": str(preview_port)}
        started.append(ServiceProcess(flags, env))
        return started[-1]

    yield start
    for s in started:
        s.kill()


def test_the_page_in_chromium_shows_the_stream_with_boxes_and_the_state(
    tmp_path: Path, broker: Broker, browser: WebDriver, live_service
) -> None:
    port = free_port()
    run = live_service(broker.port, port)
    run.wait_for_log("ready in")
    browser.open(f"http://127.0.0.1:{port}/")

    def shown() -> bool:
        width, faces, events = browser.script(
            "const rows = document.getElementById('state').rows;"
            "return [document.getElementById('stream').naturalWidth, rows.length ? rows[0].cells[1].innerText : '',"
            " document.getElementById('events').rows.length]"
        )
        return width > 0 and faces not in ("", "0") and events > 0

    wait_until(shown, 20, "the stream, the faces in view and the last events on the page")
    rect = browser.script("return document.getElementById('stream').getBoundingClientRect().toJSON()")
    x, y, w, h = (round(rect[k]) for k in ("x", "y", "width", "height"))
    assert (h, w) == (480, 640), rect
    # The control: the clip itself has no pixels of those colours, so the ones seen are drawn boxes.
    capture = cv2.VideoCapture(str(DEMO_CLIP))
    raw = max(vivid_pixels(capture.read()[1]) for _ in range(30))
    capture.release()
    assert raw < 50, raw
    # The stream is live: a frame may hold only a neutral face, whose grey box is not counted, so look
    # until one with a coloured box is on the page (the looped clip shows a happy face every few seconds).
    shots: list[np.ndarray] = []

    def boxed() -> bool:
        shots.append(browser.screenshot())
        return vivid_pixels(shots[-1][y : y + h, x : x + w]) > 500

    wait_until(boxed, 20, "a coloured face box drawn on the stream")
    shot = shots[-1]
    cv2.imwrite(str(tmp_path / "live-view.png"), shot)
    if os.environ.get(SCREENSHOT_ENV):
        cv2.imwrite(os.environ[SCREENSHOT_ENV], shot)


def local_addresses() -> list[str]:
    """This machine's addresses other than 127.0.0.1: 127.0.0.2 (loopback, yet not the bind address)
    and every interface's IPv4 address."""
    found = {"127.0.0.2"}
    listing = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True)
    for line in listing.stdout.splitlines():
        found.add(line.split()[3].split("/")[0])
    return sorted(found - {"127.0.0.1"})


def test_the_page_is_reachable_on_its_bind_address_only() -> None:
    live = LiveView("testpi")
    server = PreviewServer(PreviewConfig(enabled=True, bind="127.0.0.1", port=free_port()), live)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{url}/", timeout=5) as response:
            assert response.status == 200 and b"/stream.mjpg" in response.read()
        with urllib.request.urlopen(f"{url}/status.json", timeout=5) as response:
            assert json.loads(response.read())["device"] == "testpi"
        others = local_addresses()
        assert others, "no other address to try"
        for address in others:
            with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
                sock.settimeout(5)
                sock.connect((address, server.port))
        # A page elsewhere reaching 127.0.0.1 through a name of its own (DNS rebinding) is refused.
        request = urllib.request.Request(f"{url}/status.json", headers={"Host": f"evil.example:{server.port}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 403
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{url}/etc/passwd", timeout=5)
        assert missing.value.code == 404
    finally:
        server.stop()
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", server.port))


def test_a_taken_port_is_a_config_error_naming_the_keys() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = PreviewServer(PreviewConfig(enabled=True, bind="127.0.0.1", port=port), LiveView("testpi"))
        with pytest.raises(ConfigError, match=rf"preview.bind/port: cannot listen on 127.0.0.1:{port} \(Address"):
            server.start()
