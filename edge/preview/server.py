"""LiveView (what the page shows) and PreviewServer (the HTTP side).

Three addresses: ``/`` the page, ``/stream.mjpg`` the annotated frames as an MJPEG stream
(``multipart/x-mixed-replace``, which every browser shows in an ``<img>``), ``/status.json`` the
state and the last events. Nothing is ever written: GET only, no query strings honoured.

A page on 127.0.0.1 can still be reached by a web page in the user's own browser through DNS
rebinding (a hostile site whose name resolves to 127.0.0.1, say through the SSH tunnel), so on a
loopback bind a request must name the host as ``localhost`` or a loopback address.

On a LAN bind anyone on the network can connect, and the threads and file descriptors a client holds
are the ones the MQTT connection and the camera need too. So at most ``MAX_CLIENTS`` connections are
served at once, at most ``MAX_CLIENTS_PER_HOST`` of them from one address, so that one device
cannot take every slot (more are answered 503 without a thread), a request must arrive in full within
``REQUEST_TIMEOUT`` of connecting, and a frame that cannot be sent within ``SEND_TIMEOUT`` ends the
connection: a viewer that stops reading would otherwise keep its stream, and the encoder, running
for nobody. A client hanging up is ordinary and logged at debug level only.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import logging
import select
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

from edge.config import ConfigError, PreviewConfig
from edge.preview.page import CSP, PAGE
from edge.tools.annotate import draw
from edge.vision.tracker import Track

log = logging.getLogger(__name__)

MAX_FPS = 10.0  # frames encoded per second at most: enough to aim a camera, little CPU on a Pi
JPEG_QUALITY = 80
LAST_EVENTS = 20
BOUNDARY = "frame"
MAX_CLIENTS = 8  # a browser with the page open holds one connection (the stream) and briefly a second
MAX_CLIENTS_PER_HOST = MAX_CLIENTS // 2  # two tabs of one browser; another device still gets in
BACKLOG = 2 * MAX_CLIENTS  # connections the kernel queues while the accept loop is busy for a moment
REQUEST_TIMEOUT = 10.0  # seconds from connecting to the end of the headers
SEND_TIMEOUT = 5.0  # seconds a send may wait for a client that does not read
BUSY_WARNING_INTERVAL = 60.0  # seconds between "too many clients" warnings, so a flood is one line a minute
SERVER_NAME = "emotion-edge"  # not http.server's "BaseHTTP/0.6 Python/3.11.2", which tells an attacker more
# On every response: no MIME sniffing, and no framing (clickjacking) by any page, including by older browsers.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
STRICT_CSP = "default-src 'none'; frame-ancestors 'none'"  # for everything but the page: JSON, frames, errors
_BUSY_BODY = b"too many clients\n"
_BUSY_HEADERS = {
    "Server": SERVER_NAME, "Content-Type": "text/plain", "Content-Length": str(len(_BUSY_BODY)),
    "Retry-After": "5", **SECURITY_HEADERS, "Content-Security-Policy": STRICT_CSP, "Connection": "close",
}  # fmt: skip
# The whole answer to a client beyond MAX_CLIENTS, made once.
BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\n"
    + "".join(f"{k}: {v}\r\n" for k, v in _BUSY_HEADERS.items()).encode()
    + b"\r\n"
    + _BUSY_BODY
)


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
    request_queue_size = BACKLOG
    live: LiveView
    hosts: frozenset[str] | None  # Host header values accepted; None = any
    stopping: threading.Event

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._lock = threading.Lock()
        self._clients: Counter[str] = Counter()  # connections being served per address, each by a thread of its own
        self._warned = -BUSY_WARNING_INTERVAL  # when "too many clients" was last logged
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection while fewer than MAX_CLIENTS are served, and fewer than
        MAX_CLIENTS_PER_HOST for its address; otherwise 503 at once."""
        host = client_address[0]
        with self._lock:
            full = sum(self._clients.values()) >= MAX_CLIENTS
            admitted = not full and self._clients[host] < MAX_CLIENTS_PER_HOST
            if admitted:
                self._clients[host] += 1
        if not admitted:
            busy = f"{MAX_CLIENTS} clients" if full else f"{MAX_CLIENTS_PER_HOST} clients from {host}"
            self._refuse(request, host, busy)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(host)  # no thread started, so none will release the slot
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(client_address[0])

    def _release(self, host: str) -> None:
        with self._lock:
            self._clients[host] -= 1
            if not self._clients[host]:
                del self._clients[host]

    def _refuse(self, request: socket.socket, host: str, busy: str) -> None:
        """Answer 503 in the accept loop itself, where a non-blocking send into an empty socket buffer
        cannot stall it. What has arrived of the request is read first: closing a socket with unread
        bytes sends a reset, which can destroy the answer before the client reads it."""
        now = time.monotonic()
        if now - self._warned >= BUSY_WARNING_INTERVAL:
            self._warned = now
            log.warning("preview: %s connected already: 503 to %s (more refusals within a minute are not"
                        " logged)", busy, host)  # fmt: skip
        request.setblocking(False)
        with contextlib.suppress(OSError):  # nothing has arrived yet, or the client has reset already
            request.recv(65536)
        with contextlib.suppress(OSError):  # the client has gone already
            request.sendall(BUSY)
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, not socketserver's traceback: a client hanging up is ordinary, anything else a bug."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            log.debug("preview %s: the client left (%s)", client_address[0], type(exc).__name__)
        else:
            log.error("preview %s: request failed: %r", client_address[0], exc)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _RequestReader(io.RawIOBase):
    """The connection's incoming bytes, each receive allowed only the time left until ``deadline``, so
    that a client trickling a byte every few seconds is cut off as surely as one sending nothing. The
    request is always read before anything is sent, so every send gets the SEND_TIMEOUT set here."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(left)
        try:
            return self._sock.recv_into(buffer)
        finally:
            self._sock.settimeout(SEND_TIMEOUT)


class _Handler(BaseHTTPRequestHandler):
    """A timeout (the request's, or a send's) is handled by http.server itself: it ends the connection
    and calls log_error, which logs at debug level here like every other line about a request."""

    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: the stream ends when the socket does
    csp = STRICT_CSP  # the page's own policy replaces it in do_GET

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the buffered reader http.server made, replaced by one with a deadline
        self.rfile = io.BufferedReader(_RequestReader(self.connection, time.monotonic() + REQUEST_TIMEOUT))

    def version_string(self) -> str:
        return SERVER_NAME

    def end_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Content-Security-Policy", self.csp)
        super().end_headers()

    def do_GET(self) -> None:
        if self.server.hosts is not None and self._host() not in self.server.hosts:
            self.send_error(HTTPStatus.FORBIDDEN, "unexpected Host header")
            return
        path = self.path.split("?", 1)[0]
        if path == "/":
            self.csp = CSP
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
        try:  # ended by the viewer leaving, a send timing out (a viewer not reading) or the server stopping
            while not self.server.stopping.is_set():
                got = live.next_frame(seq, timeout=0.5)
                if got is None:
                    if _left(self.connection):  # no frame to fail writing (paused, camera away): ask the socket
                        return
                    continue
                seq, jpeg = got
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                self.wfile.write(head.encode() + jpeg + b"\r\n")
                self.wfile.flush()
        finally:
            live.watching(-1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("preview %s: " + format, self.address_string(), *args)


def _left(sock: socket.socket) -> bool:
    """Whether the viewer has closed its end: a viewer sends nothing after its request, so a socket that
    reads as ended (or reset) is one nobody watches, and its slot goes to the next viewer."""
    try:
        ready, _, _ = select.select([sock], [], [], 0)
        return bool(ready) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


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
