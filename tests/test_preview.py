"""The live view: frames encoded only while watched, the page in Debian's headless Chromium showing the
stream with boxes, the page reachable on its bind address only, and clients that cannot take the
service's threads, its encoder or its log: slow, stalled, too many or hanging up.

Chromium is driven through chromedriver's W3C WebDriver HTTP interface with the standard library, so
no Selenium is needed; setup.sh --dev installs both Debian packages.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import itertools
import json
import logging
import os
import select
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from helpers import Broker, ServiceProcess, free_port, wait_until

from edge.config import ConfigError, PreviewConfig
from edge.preview import LiveView, PreviewServer
from edge.preview import server as preview_server
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
    live.watching(+1)  # a new viewer waits for a fresh frame, not the last one from before it came
    assert live.next_frame(0, timeout=0.05) is None


def test_a_camera_faster_than_max_fps_is_encoded_at_max_fps() -> None:
    live = LiveView("testpi")
    live.watching(+1)
    with camera(live, np.full((120, 160, 3), 90, np.uint8)):  # 50 frames a second
        time.sleep(1.0)
    assert 5 <= live.encoded <= preview_server.MAX_FPS + 1, live.encoded


def test_the_status_holds_the_last_events_newest_first() -> None:
    live = LiveView("testpi")
    for seq in range(1, preview_server.LAST_EVENTS + 6):
        live.event({"seq": seq, "type": "start"})
    events = live.status()["events"]
    assert [e["seq"] for e in events] == list(range(preview_server.LAST_EVENTS + 5, 5, -1))


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


@contextmanager
def serving(live: LiveView) -> Iterator[PreviewServer]:
    """A preview server in this process on a free loopback port, for tests that need no camera."""
    server = PreviewServer(PreviewConfig(enabled=True, bind="127.0.0.1", port=free_port()), live)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def camera(live: LiveView, image: np.ndarray) -> Iterator[None]:
    """The service's frame loop in a thread: ``image`` handed to ``live`` at 50 frames a second."""
    stopped = threading.Event()

    def run() -> None:
        while not stopped.wait(0.02):
            live.frame(image, [])

    feeder = threading.Thread(target=run, daemon=True)
    feeder.start()
    try:
        yield
    finally:
        stopped.set()
        feeder.join(5)


@contextmanager
def other_site(html: str) -> Iterator[str]:
    """The address of ``html`` served by a web server of its own: another origin than the live view."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(html.encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test's output is not the place for another server's access log

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def preview_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name.startswith("edge.preview") and r.levelno >= logging.WARNING
    ]


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed the connection (a FIN, or a reset for bytes it never read)."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_every_response_forbids_sniffing_and_framing_and_names_no_python() -> None:
    with serving(LiveView("testpi")) as server:
        answers = {}
        for path, host in [("/", "localhost"), ("/status.json", "localhost"), ("/stream.mjpg", "127.0.0.1"),
                           ("/nowhere", "localhost"), ("/", "evil.example")]:  # fmt: skip
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            connection.request("GET", path, headers={"Host": f"{host}:{server.port}"})
            response = connection.getresponse()  # the headers only: the stream's body never ends
            answers[path, host] = response.status, response.headers
            connection.close()
    assert [status for status, _ in answers.values()] == [200, 200, 200, 404, 403]
    for (path, host), (_, headers) in answers.items():
        assert headers["X-Content-Type-Options"] == "nosniff", (path, host)
        assert headers["X-Frame-Options"] == "DENY", (path, host)
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], (path, host)
        assert headers["Server"] == "emotion-edge", (path, host)
    for path, host in [("/", "localhost"), ("/status.json", "localhost"), ("/stream.mjpg", "127.0.0.1")]:
        assert answers[path, host][1]["Cache-Control"] == "no-store", path  # a stale state or frame is a wrong one
    page_policy = answers["/", "localhost"][1]["Content-Security-Policy"]
    assert "default-src 'none'" in page_policy and "script-src 'sha256-" in page_policy, page_policy
    assert "unsafe-inline" not in page_policy


def test_chromium_does_not_show_the_page_inside_another_page(browser: WebDriver) -> None:
    live = LiveView("testpi")
    # Frames, because a browser counts a page as loaded once its stream has shown the first one.
    with serving(live) as server, camera(live, np.full((120, 160, 3), 90, np.uint8)):
        page = f"http://127.0.0.1:{server.port}/"
        # A page from another site framing the live view (clickjacking): the frame loads, but stays empty.
        framing = f"<iframe src='{page}' onload='document.title=\"loaded\"'></iframe>"
        with other_site(framing) as elsewhere:
            browser.open(elsewhere)
            wait_until(lambda: browser.script("return document.title") == "loaded", 20, "the frame to load")
            time.sleep(1)  # time enough for a page shown in the frame to open its stream
            assert live.watchers == 0, "the page was shown inside another page"
        # The control: the same page on its own opens the stream.
        browser.open(page)
        wait_until(lambda: live.watchers == 1, 20, "the page on its own to open the stream")


def test_a_request_must_arrive_in_time_even_a_byte_at_a_time(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(preview_server, "REQUEST_TIMEOUT", 1.0)
    with serving(LiveView("testpi")) as server:
        address = ("127.0.0.1", server.port)
        with socket.create_connection(address, timeout=5) as idle, socket.create_connection(address) as trickle:
            started = time.monotonic()
            trickle.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n")
            # A byte every 0.2 s, each well within any per-receive timeout, never the blank line ending the headers.
            for byte in itertools.cycle(b"X-Slow: yes\r\n"):
                if select.select([trickle], [], [], 0.2)[0] and closed_by_server(trickle):
                    break
                assert time.monotonic() - started < 5, "the trickling client is still connected after 5 s"
                trickle.send(bytes([byte]))
            assert time.monotonic() - started < 3
            assert closed_by_server(idle), "the client sending nothing is still connected"
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5) as response:
            assert response.status == 200
    assert preview_warnings(caplog) == [] and "Traceback" not in caplog.text


def test_a_viewer_that_stops_reading_is_dropped_and_the_encoding_stops(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(preview_server, "SEND_TIMEOUT", 1.0)
    live = LiveView("testpi")
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)  # JPEG cannot shrink it
    with serving(live) as server, camera(live, noise), socket.socket() as viewer:
        viewer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        viewer.connect(("127.0.0.1", server.port))
        viewer.sendall(b"GET /stream.mjpg HTTP/1.0\r\nHost: localhost\r\n\r\n")
        wait_until(lambda: live.encoded >= 3, 10, "frames encoded for the viewer")
        # It never reads: the socket buffers fill within seconds, then a send makes no progress.
        wait_until(lambda: live.watchers == 0, 20, "the viewer that stopped reading to be dropped")
        encoded = live.encoded
        time.sleep(0.5)
        assert live.encoded == encoded, "frames are still encoded for nobody"
    assert preview_warnings(caplog) == [] and "Traceback" not in caplog.text


def connect_from(n: int, port: int) -> socket.socket:
    """The n-th client, from loopback addresses 127.0.0.2 and on (all of 127/8 is this host), as many from
    each as the server lets one address hold: as though from that many devices on a LAN."""
    sock = socket.socket()
    sock.settimeout(5)
    sock.bind((f"127.0.0.{2 + n // preview_server.MAX_CLIENTS_PER_HOST}", 0))
    sock.connect(("127.0.0.1", port))
    return sock


def test_viewers_who_leave_while_no_frames_come_free_their_slots(caplog: pytest.LogCaptureFixture) -> None:
    # Paused or without a camera no frame is written, so no failed write can tell that a viewer has gone.
    live = LiveView("testpi")
    with serving(live) as server:
        viewers = []
        for n in range(preview_server.MAX_CLIENTS):
            viewer = connect_from(n, server.port)
            viewer.sendall(b"GET /stream.mjpg HTTP/1.0\r\nHost: localhost\r\n\r\n")
            viewers.append(viewer)
        wait_until(lambda: live.watchers == preview_server.MAX_CLIENTS, 5, "every viewer to be streamed to")
        for viewer in viewers:
            viewer.close()
        wait_until(lambda: live.watchers == 0, 5, "the viewers who left to be let go")
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/status.json", timeout=5) as response:
            assert response.status == 200
    assert preview_warnings(caplog) == [] and "Traceback" not in caplog.text


def test_one_device_cannot_take_every_slot(caplog: pytest.LogCaptureFixture) -> None:
    live = LiveView("testpi")
    with serving(live) as server:
        held = [connect_from(0, server.port) for _ in range(preview_server.MAX_CLIENTS_PER_HOST)]
        for sock in held:
            sock.sendall(b"GET /stream.mjpg HTTP/1.0\r\nHost: localhost\r\n\r\n")
        wait_until(lambda: live.watchers == len(held), 5, "the device's viewers to be streamed to")
        with connect_from(0, server.port) as more:  # one more from the same address
            more.sendall(b"GET /status.json HTTP/1.0\r\nHost: localhost\r\n\r\n")
            assert more.recv(4096).startswith(b"HTTP/1.0 503 ")
        with connect_from(preview_server.MAX_CLIENTS_PER_HOST, server.port) as other:  # another device
            other.sendall(b"GET /status.json HTTP/1.0\r\nHost: localhost\r\n\r\n")
            assert other.recv(4096).startswith(b"HTTP/1.0 200 ")
        for sock in held:
            sock.close()
        wait_until(lambda: live.watchers == 0, 5, "the viewers who left to be let go")
        with connect_from(0, server.port) as again:  # the address's slots are free again
            again.sendall(b"GET /status.json HTTP/1.0\r\nHost: localhost\r\n\r\n")
            assert again.recv(4096).startswith(b"HTTP/1.0 200 ")
    assert preview_warnings(caplog) == [
        f"preview: {preview_server.MAX_CLIENTS_PER_HOST} clients from 127.0.0.2 connected already: 503 to 127.0.0.2"
        " (more refusals within a minute are not logged)"
    ]


def process_threads(pid: int) -> int:
    return int(Path(f"/proc/{pid}/status").read_text().split("Threads:")[1].split()[0])


def test_a_flood_of_clients_takes_neither_the_service_threads_nor_its_log(broker: Broker, live_service) -> None:
    port = free_port()
    run = live_service(broker.port, port)
    run.wait_for_log("ready in")
    before = process_threads(run.process.pid)

    def half_request(n: int) -> socket.socket:
        sock = connect_from(n, port)
        sock.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n")  # the headers never end
        return sock

    held = [half_request(n) for n in range(preview_server.MAX_CLIENTS)]
    wait_until(lambda: process_threads(run.process.pid) >= before + len(held), 5, "a thread for each client")
    flood = [half_request(n) for n in range(30)]
    for sock in flood:  # answered at once, not held
        assert sock.recv(4096).startswith(b"HTTP/1.0 503 "), "a client beyond the cap was not refused"
        sock.close()
    assert process_threads(run.process.pid) <= before + len(held) + 1  # +1: a thread of the service's own, say
    with pytest.raises(urllib.error.HTTPError) as busy:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=5)
    assert busy.value.code == 503
    for sock in held:
        sock.close()

    def served() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=5) as response:
                return response.status == 200
        except urllib.error.HTTPError:
            return False

    wait_until(served, 5, "a client to be served once the others left")
    # Clients hanging up at once, with a reset, on the page and on the stream: ordinary, so no traceback.
    for path in ["/", "/stream.mjpg"] * 10:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
    wait_until(served, 5, "the service to serve after the hang-ups")
    time.sleep(0.5)  # for the last handler threads to finish
    preview_lines = [line for line in run.lines if "preview" in line and "live view on" not in line]
    assert len(preview_lines) == 1 and "503" in preview_lines[0], "\n".join(preview_lines)
    assert "Traceback" not in run.log, run.log
