"""``emotion-edge demo``: the whole pipeline on the bundled clip, printed as a subscriber sees it.

The clip lies beside this module (demo.mp4, shipped in the package), so an installed copy can run
the demo, and ``bench`` can time the pipeline, with no camera and nothing else to download.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge.config import Config
from edge.mqtt.payloads import Topics

log = logging.getLogger("edge")

# A few seconds of 640x480 video with one to three real faces (FER-2013 PublicTest photos) that change
# expression, arrive and leave.
DEMO_CLIP = Path(__file__).resolve().parent / "demo.mp4"

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _demo_broker(config: Config) -> Iterator[None]:
    """Use the configured broker if it answers; else, for a local one, a throwaway mosquitto on a free port."""
    mqtt = config.mqtt
    if _port_open(mqtt.host, mqtt.port):
        yield
        return
    mosquitto = "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else shutil.which("mosquitto")
    if mqtt.host not in LOCAL_HOSTS or mosquitto is None:
        hint = "" if mqtt.host not in LOCAL_HOSTS else " and mosquitto is not installed (sudo apt install mosquitto)"
        raise ConnectionError(f"no MQTT broker answers on {mqtt.host}:{mqtt.port}{hint}")
    asked = f"{mqtt.host}:{mqtt.port}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        mqtt.host, mqtt.port = "127.0.0.1", s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="emotion-edge-demo-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {mqtt.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                if _port_open(mqtt.host, mqtt.port) or broker.poll() is not None:
                    break
                threading.Event().wait(0.05)
            if broker.poll() is not None:
                raise ConnectionError(f"{mosquitto} exited at start (code {broker.returncode})")
            if not _port_open(mqtt.host, mqtt.port):
                raise ConnectionError(f"{mosquitto} started but did not listen on port {mqtt.port} in 5 s")
            log.info("demo: no broker on %s; started mosquitto on port %d for the demo", asked, mqtt.port)
            yield
        finally:
            broker.terminate()
            broker.wait(5)


class _Printer:
    """Subscribes to the demo device's topics and prints what arrives, as ``topic payload`` lines."""

    def __init__(self, config: Config, topics: Any) -> None:
        from edge.mqtt.publisher import make_client

        self.topics = topics
        self.count = 0
        self.offline = threading.Event()
        subscribed = threading.Event()
        refused: list[str] = []
        wanted = f"{topics.base}/#"

        def on_connect(client: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
            if reason.is_failure:  # said at once, not after the subscription's wait
                refused.append(f"refused the connection: {reason}")
                subscribed.set()
            else:
                client.subscribe(wanted, qos=1)

        def on_subscribe(_c: Any, _u: Any, _mid: int, reasons: list[Any], _p: Any = None) -> None:
            if reasons and reasons[0].is_failure:  # an access control's refusal: nothing would be printed
                refused.append(f"refused the subscription to {wanted}: {reasons[0]}")
            subscribed.set()

        self.client = make_client(config.mqtt, f"{config.mqtt.client_id}-viewer")
        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(config.mqtt.host, config.mqtt.port, keepalive=config.mqtt.keepalive)
        self.client.loop_start()
        broker = f"{config.mqtt.host}:{config.mqtt.port}"
        if not subscribed.wait(10) or refused:
            self.client.loop_stop()
            why = refused[0] if refused else "did not answer the subscription in 10 s"
            raise ConnectionError(f"broker {broker} {why}")

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        if msg.retain:  # left by an earlier run: not something this run published
            return
        self.count += 1
        print(f"{msg.topic} {msg.payload.decode(errors='replace')}", flush=True)
        if msg.topic == self.topics.availability and msg.payload == b"offline":
            self.offline.set()

    def close(self) -> None:
        """Clear the demo device's retained topics so the broker keeps nothing of a demo."""
        self.client.unsubscribe(f"{self.topics.base}/#")
        t = self.topics
        for topic in (t.availability, t.state, t.stats, t.scores, t.enabled, t.summary, t.camera):
            self.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()


def run(config: Config, max_frames: int | None = None) -> int:
    """Serve ``config`` (the bundled clip unless told otherwise) and print what its subscribers get."""
    from edge.service import serve  # not at import: bench and the tests need DEMO_CLIP without the service

    # Its own device id, so a demo beside the real service never touches the service's topics.
    config.mqtt.device_id = f"{config.mqtt.device_id}-demo"
    topics = Topics.of(config.mqtt.topic_prefix, config.mqtt.device_id)
    try:
        with _demo_broker(config):
            printer = _Printer(config, topics)
            log.info("demo: %s -> %s:%d, printing what a subscriber of %s/# receives",
                     config.source.spec, config.mqtt.host, config.mqtt.port, topics.base)  # fmt: skip
            try:
                code = serve(config, max_frames, discovery=False)
                printer.offline.wait(3)
            finally:
                printer.close()
    except (ConnectionError, OSError) as exc:
        log.error("demo: %s", exc)
        return 1
    log.info("demo: %d messages received", printer.count)
    return code
