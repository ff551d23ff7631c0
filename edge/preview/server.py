"""LiveView (what the page shows) and PreviewServer (the HTTP side).

Three addresses: ``/`` the page, ``/stream.mjpg`` the annotated frames as an MJPEG stream
(``multipart/x-mixed-replace``, which every browser shows in an ``<img>``), ``/status.json`` the
state and the last events. Nothing is ever written: GET only, no query strings honoured.

A page on 127.0.0.1 can still be reached by a web page in the user's own browser through DNS
rebinding (a hostile site whose name resolves to 127.0.0.1, say through the SSH tunnel), so on a
loopback bind a request must name the host as ``localhost`` or a loopback address.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

from edge.config import ConfigError, PreviewConfig
from edge.preview.page import PAGE
from edge.tools.annotate import draw
from edge.vision.tracker import Track

log = logging.getLogger(__name__)

MAX_FPS = 10.0  # frames encoded per second at most: enough to aim a camera, little CPU on a Pi
JPEG_QUALITY = 80
LAST_EVENTS = 20
BOUNDARY = "frame"


class LiveView:
    """What the service hands over: frames (used only while watched), the state, the events."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._seq = 0
        self._last_encode = 0.0
        self._state: dict[str, Any] = {}
        self._events: deque[dict[str, Any]] = deque(maxlen=LAST_EVENTS)
        self.watchers = 0
        self.encoded = 0  # frames encoded since start: the cost of the live view, for tests and stats

    def frame(self, image: np.ndarray, tracks: Sequence[Track]) -> None:
        """Draw and encode the frame if a stream is open and the rate allows; otherwise return at once."""
        if not self.watchers:
            return
        now = time.monotonic()
        if now - self._last_encode < 1.0 / MAX_FPS:
            return
        self._last_encode = now
        ok, jpeg = cv2.imencode(".jpg", draw(image, list(tracks)), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return
        with self._cond:
            self._jpeg = jpeg.tobytes()
            self._seq += 1
            self.encoded += 1
            self._cond.notify_all()

    def state(self, body: Mapping[str, Any]) -> None:
        with self._cond:
            self._state = dict(body)

    def event(self, body: Mapping[str, Any]) -> None:
        with self._cond:
            self._events.appendleft(dict(body))

    def status(self) -> dict[str, Any]:
        with self._cond:
            return {"device": self.device, "state": self._state, "events": list(self._events)}

    def next_frame(self, after: int, timeout: float) -> tuple[int, bytes] | None:
        """The first frame newer than sequence number ``after``, waiting up to ``timeout`` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._seq > after and self._jpeg is not None, timeout):
                return None
            assert self._jpeg is not None
            return self._seq, self._jpeg

    def watching(self, delta: int) -> None:
        with self._cond:
            self.watchers += delta
            if not self.watchers:
                self._jpeg = None  # a new viewer gets a fresh frame, not the last one before a pause


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    live: LiveView
    hosts: frozenset[str] | None  # Host header values accepted; None = any
    stopping: threading.Event


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: the stream ends when the socket does

    def do_GET(self) -> None:
        if self.server.hosts is not None and self._host() not in self.server.hosts:
            self.send_error(HTTPStatus.FORBIDDEN, "unexpected Host header")
            return
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/status.json":
            self._send(json.dumps(self.server.live.status()).encode(), "application/json")
        elif path == "/stream.mjpg":
            self._stream()
        else:
            self.send_error(HTTPStatus.NOT_FOUND)

    def _host(self) -> str:
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("["):
            return host[1 : host.find("]")] if "]" in host else host
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        live = self.server.live
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        live.watching(+1)
        seq = 0
        try:
            while not self.server.stopping.is_set():
                got = live.next_frame(seq, timeout=0.5)
                if got is None:
                    continue
                seq, jpeg = got
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                self.wfile.write(head.encode() + jpeg + b"\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the viewer closed the page
        finally:
            live.watching(-1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("preview %s: " + format, self.address_string(), *args)


def _loopback(bind: str) -> bool:
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return bind == "localhost"


class PreviewServer:
    """``start()`` listens on ``[preview] bind``:``port`` in a daemon thread; ``stop()`` ends it."""

    def __init__(self, config: PreviewConfig, live: LiveView) -> None:
        self._config = config
        self._live = live
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def start(self) -> None:
        """Raises ConfigError naming the keys when the address cannot be listened on."""
        c = self._config
        try:
            server = (_Server6 if ":" in c.bind else _Server)((c.bind, c.port), _Handler)
        except OSError as exc:
            raise ConfigError(
                f"preview.bind/port: cannot listen on {c.bind}:{c.port} ({exc.strerror or exc})"
            ) from None
        server.live = self._live
        server.stopping = threading.Event()
        names = {"localhost", "127.0.0.1", "::1", c.bind}
        server.hosts = frozenset(names) if _loopback(c.bind) else None
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="preview", daemon=True)
        self._thread.start()
        log.info("preview: live view on http://%s:%d/", c.bind if ":" not in c.bind else f"[{c.bind}]", self.port)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
