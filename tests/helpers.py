"""Test helpers: a real mosquitto broker on a free port, a paho subscriber that records messages, and
the service's command line. Fixtures built from them live in conftest.py.

The broker is Debian's /usr/sbin/mosquitto (or the one on PATH), started with a throwaway config so
retained messages never leak from one test into another.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest

REPO = Path(__file__).resolve().parent.parent
DEVICE = "testpi"  # the device id the service tests run as
MOSQUITTO = "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else shutil.which("mosquitto")
# mosquitto's dynamic-security plugin, in Debian's mosquitto package: an access control that refuses a
# subscription when asked (its acl_file grants every one and withholds messages at delivery instead).
DYNSEC = next(iter(sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"))), None)


def read_image(path: Path | str, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """A committed fixture image; fails the test naming the file when it cannot be read."""
    image = cv2.imread(str(path), flags)
    if image is None:
        pytest.fail(f"{path}: cannot read the fixture image")
    return image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate``; fail naming ``what`` if it is still false after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def make_pki(tmp_path: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (EC keys: fast)."""
    names = ("ca.key", "ca.crt", "server.key", "server.crt", "client.key", "client.crt")
    files = {name: tmp_path / name for name in names}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=test-ca")
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for who, ext in (("server", ["-extfile", "san.ext"]), ("client", [])):
        openssl("req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN={who}")
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{who}.crt", "-days", "1", *ext)  # fmt: skip
    return files


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's notify socket, recording what arrives and when."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.messages: list[tuple[float, str]] = []  # (time.monotonic(), datagram)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.1)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                self.messages.append((time.monotonic(), self._sock.recv(4096).decode()))
            except OSError:  # the timeout (socket.timeout before Python 3.10)
                continue

    def env(self, watchdog_usec: int | None = None) -> dict[str, str]:
        usec = {"WATCHDOG_USEC": str(watchdog_usec)} if watchdog_usec else {}
        return {"NOTIFY_SOCKET": self.path, **usec}

    def statuses(self) -> list[str]:
        return [line[7:] for _t, m in self.messages for line in m.split("\n") if line.startswith("STATUS=")]

    def pings(self, after: float = 0.0) -> list[float]:
        return [t for t, m in self.messages if m == "WATCHDOG=1" and t > after]

    def close(self) -> None:
        self._closed.set()
        self._thread.join(1)
        self._sock.close()

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextlib.contextmanager
def locked_folder(parent: Path) -> Iterator[Path]:
    """A folder that this process may not enter, for as long as the block runs: root enters any folder, so as
    root the block runs as nobody (the effective user only, given back after), as a service's own user would."""
    folder = parent / "locked"
    folder.mkdir()
    folder.chmod(0)
    root = os.geteuid() == 0
    try:
        if root:
            os.seteuid(65534)
        yield folder
    finally:
        if root:
            os.seteuid(0)
        folder.chmod(0o700)


def refusing_subscriptions(tmp: Path, allowed: list[str]) -> str:
    """``Broker(listener=…)`` lines for anonymous clients that may publish anything but subscribe only to the
    ``allowed`` filters; any other subscription is answered "Not authorized"."""
    if DYNSEC is None:
        pytest.skip("mosquitto's dynamic-security plugin is not installed")
    security = tmp / f"dynsec-{secrets.token_hex(3)}.json"
    security.write_text(json.dumps({
        "defaultACLAccess": {"publishClientSend": True, "publishClientReceive": True, "subscribe": False,
                             "unsubscribe": True},
        "clients": [], "groups": [{"groupname": "anonymous", "roles": [{"rolename": "reader"}]}],
        "roles": [{"rolename": "reader",
                   "acls": [{"acltype": "subscribePattern", "topic": t, "allow": True} for t in allowed]}],
        "anonymousGroup": "anonymous",
    }))  # fmt: skip
    return f"allow_anonymous true\nplugin {DYNSEC}\nplugin_opt_config_file {security}"


class Broker:
    """One mosquitto process listening on 127.0.0.1:port."""

    def __init__(self, tmp: Path, port: int | None = None, *, persistent: bool = False, listener: str = "") -> None:
        """``persistent`` keeps sessions across a restart (saved at stop), for durable subscribers;
        ``listener`` adds lines to the listener's settings (TLS, authentication)."""
        self.port = port or free_port()
        self.conf = tmp / f"mosquitto-{self.port}.conf"
        self.log = tmp / f"mosquitto-{self.port}.log"
        persistence = f"persistence true\npersistence_location {tmp}/\n" if persistent else "persistence false\n"
        # Run as ourselves: mosquitto started by root otherwise drops to a "mosquitto" user that cannot
        # write its database into our temporary directory.
        self.conf.write_text(
            f"per_listener_settings true\nuser {getpass.getuser()}\n{persistence}"
            f"listener {self.port} 127.0.0.1\n{listener or 'allow_anonymous true'}\n"
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> Broker:
        assert MOSQUITTO is not None, "the broker fixtures skip without mosquitto"
        with self.log.open("ab") as log:
            process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        self.process = process
        wait_until(lambda: port_open(self.port) or process.poll() is not None, 10, "mosquitto to listen")
        if process.poll() is not None:
            pytest.fail(f"mosquitto exited at start: {self.log.read_text()}")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int

    @property
    def text(self) -> str:
        return self.payload.decode()


class Subscriber:
    """A paho client recording everything on its topic filters, for asserting what a user would receive.

    With a ``durable_id`` the session outlives the connection (clean_session false, QoS 1): the broker
    keeps what is published while the subscriber is away, which makes "published while we were not
    looking" observable without racing the publisher.
    """

    def __init__(self, port: int, topics: list[str], durable_id: str | None = None) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._topics = topics
        client_id = durable_id or f"test-sub-{secrets.token_hex(4)}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not durable_id)
        self.client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            pytest.fail(f"subscriber could not subscribe to {topics} on port {port}")

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos))

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, topic: str, predicate: Callable[[Received], bool] = lambda m: True, timeout: float = 15):
        """The first message on ``topic`` that satisfies ``predicate``, waiting up to ``timeout`` seconds."""
        wait_until(lambda: any(predicate(m) for m in self.on(topic)), timeout, f"a matching message on {topic}")
        return next(m for m in self.on(topic) if predicate(m))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def edge_command(*args: str) -> list[str]:
    """``python -m edge ...`` with this interpreter, so tests need no installed console script."""
    return [sys.executable, "-m", "edge", *args]


class ServiceProcess:
    """``python -m edge run …`` in a subprocess, its stderr collected line by line for bounded waits."""

    def __init__(self, args: list[str], env: dict[str, str], wrap: list[str] | None = None) -> None:
        """``wrap``: a command the service runs under (unshare, say)."""
        self.lines: list[str] = []
        self.times: list[float] = []  # time.monotonic() at which each line arrived, for "how soon" checks
        command = [*(wrap or []), *edge_command("run", *args)]
        self.process = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.times.append(time.monotonic())
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for_log(self, text: str, timeout: float = 20) -> None:
        wait_until(lambda: text in self.log or self.process.poll() is not None, timeout, f"{text!r} in the log")
        assert text in self.log, f"service exited with {self.process.returncode} before logging {text!r}:\n{self.log}"

    def wait_for_line(self, text: str, after: float = 0.0, timeout: float = 20) -> float:
        """When the first line containing ``text`` that arrived after ``after`` (monotonic) came."""

        def found() -> float | None:
            return next((t for t, line in zip(self.times, self.lines) if t > after and text in line), None)

        wait_until(lambda: found() is not None or self.process.poll() is not None, timeout, f"{text!r} in the log")
        when = found()
        assert when is not None, f"service exited with {self.process.returncode} before logging {text!r}:\n{self.log}"
        return when

    def wait(self, timeout: float = 30) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"service did not exit within {timeout}s:\n{self.log}")
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
