"""The publisher: the service's only way out to the network (publish / subscribe / stop).

Shaped like Frigate's Communicator (the ``Publisher`` protocol) so another transport could stand in.
The MQTT one is built for a Pi that boots before its broker, loses Wi-Fi, or outlives a broker restart:
paho's own thread keeps reconnecting with backoff while the pipeline runs on, and what is published meanwhile waits in a
bounded queue (events in order; retained topics only their latest value) and goes out on reconnect.
Events still queued when the service stops are kept in a spool file and sent after the next start;
retained values are not, since the next run publishes the room as it is then.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from edge.config import ConfigError, MqttConfig
from edge.mqtt.payloads import OFFLINE, ONLINE

log = logging.getLogger(__name__)

MessageCallback = Callable[[str, bytes], None]


class Publisher(Protocol):
    """What the rest of the runtime may ask of a transport, so Discovery works with any of them."""

    def publish(self, topic: str, payload: str, *, retain: bool = False) -> None: ...
    def subscribe(self, topic: str, callback: MessageCallback) -> None: ...
    def add_connect_hook(self, hook: Callable[[], None]) -> None: ...
    def stop(self, timeout: float = 1.5) -> None: ...


@dataclass
class _Message:
    topic: str
    payload: str
    qos: int
    retain: bool


class _OwnDisconnectNoise(logging.Filter):
    """paho 2.2's network thread makes one more pass after our own ``disconnect()`` and logs
    "Client is not connected ... MQTT_CS_DISCONNECTED" at ERROR; the stop worked, so the line would
    only alarm whoever reads the journal. A lost connection reports another state and still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Client is not connected") and message.endswith("MQTT_CS_DISCONNECTED"))


_paho_log = log.getChild("paho")
_paho_log.addFilter(_OwnDisconnectNoise())


def spool_path(config: MqttConfig, env: dict[str, str] | os._Environ = os.environ) -> Path | None:
    """``mqtt.spool``, else a file in systemd's StateDirectory; None (no spool) outside systemd."""
    if config.spool:
        return Path(config.spool)
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) / "mqtt-spool.jsonl" if state else None


def make_client(
    config: MqttConfig, client_id: str, *, protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv311
) -> mqtt.Client:
    """A paho client with the configured credentials and TLS, for the publisher and for subscribers
    (the demo, ``watch``: MQTT 5 for shared subscriptions) that must reach the same broker the same way."""
    # MQTT 5 has no clean_session: clean_start is given with each connect instead
    clean = True if protocol != mqtt.MQTTv5 else None
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, clean_session=clean)
    client.enable_logger(_paho_log)  # packet traces at --log-level debug, callback errors always
    if config.username:
        client.username_pw_set(config.username, config.password or None)
    if config.tls:
        try:
            client.tls_set(config.tls_ca or None, config.tls_cert or None, config.tls_key or None)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"mqtt.tls_ca/tls_cert/tls_key: cannot load the TLS files ({exc})") from None
    return client


class MqttPublisher:
    """paho-mqtt 2 client with a last will on ``availability_topic`` and an offline queue.

    ``on_connect`` callbacks run in paho's thread after every (re)connection, once the backlog is
    out: the place to (re)send Home Assistant discovery.
    """

    def __init__(self, config: MqttConfig, availability_topic: str, spool: Path | None = None) -> None:
        self._config = config
        self._availability = availability_topic
        self._spool = spool
        self._lock = threading.Lock()
        self._pending: deque[_Message] = deque()
        self._latest: dict[str, _Message] = {}  # retained topics: only the newest value matters
        self._connected = False
        self._draining = False
        self._stopped = False
        self._broker_down_logged = False
        self._last_refusal = ""
        self._subscriptions: dict[str, MessageCallback] = {}
        self._connect_hooks: list[Callable[[], None]] = []
        self.events_dropped = 0
        self.connected_once = threading.Event()
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        c = self._config
        client = make_client(c, c.client_id)
        client.will_set(self._availability, OFFLINE, qos=c.qos, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        return client

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def queue_depth(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._latest)

    def add_connect_hook(self, hook: Callable[[], None]) -> None:
        self._connect_hooks.append(hook)

    def start(self) -> None:
        """Return at once; paho's thread connects in the background (the broker may be down at boot)."""
        c = self._config
        self._restore()
        log.info("MQTT: connecting to %s:%d as %s%s", c.host, c.port, c.client_id, " (TLS)" if c.tls else "")
        self._client.connect_async(c.host, c.port, keepalive=c.keepalive)
        self._client.loop_start()

    def publish(self, topic: str, payload: str, *, retain: bool = False, qos: int | None = None) -> None:
        message = _Message(topic, payload, self._config.qos if qos is None else qos, retain)
        with self._lock:
            if not self._connected or self._draining:
                self._enqueue(message)
                return
        self._send(message)

    def subscribe(self, topic: str, callback: MessageCallback) -> None:
        """Deliver messages on ``topic`` (filters allowed) to ``callback(topic, payload)`` in paho's thread;
        renewed on every reconnection because the session is clean."""
        self._subscriptions[topic] = callback
        self._client.message_callback_add(topic, lambda _c, _u, msg: callback(msg.topic, msg.payload))
        if self._connected:
            self._client.subscribe(topic, qos=self._config.qos)

    def stop(self, timeout: float = 1.5) -> None:
        """Send the backlog and ``offline`` (retained), then disconnect; gives up after ``timeout`` seconds
        so a dead broker cannot hold up a systemd stop."""
        deadline = time.monotonic() + timeout
        self._stopped = True
        while self.queue_depth and not self._connected and time.monotonic() < deadline:
            time.sleep(0.01)  # a connection still being made would deliver what is queued
        if self._connected:
            while self._draining and time.monotonic() < deadline:  # a reconnection is sending the backlog
                time.sleep(0.01)
            self._drain()
            info = self._client.publish(self._availability, OFFLINE, qos=self._config.qos, retain=True)
            self._wait(info, deadline)
            self._client.disconnect()
        if self._pending:
            self._save()
        # loop_stop joins paho's thread, which may sit in a TCP connect for connect_timeout seconds;
        # the thread is a daemon, so a bounded join is enough to let the process exit on time.
        stopper = threading.Thread(target=self._client.loop_stop, daemon=True)
        stopper.start()
        stopper.join(max(0.1, deadline - time.monotonic()))

    def _restore(self) -> None:
        """Queue the events a previous run could not deliver; the file goes once they are in the queue."""
        if not self._spool or not self._spool.exists():
            return
        try:
            messages = [_Message(**json.loads(line)) for line in self._spool.read_text().splitlines() if line]
        except (OSError, ValueError, TypeError) as exc:
            log.error("MQTT spool %s: unreadable, left in place (%s)", self._spool, exc)
            return
        with self._lock:
            for message in messages:
                self._enqueue(message)
        self._spool.unlink()
        log.info("MQTT: %d events from the last run queued from %s", len(messages), self._spool)

    def _save(self) -> None:
        with self._lock:
            pending = list(self._pending)
        if not self._spool:
            log.warning("MQTT: broker unreachable at stop; %d queued events not delivered (no spool)", len(pending))
            return
        partial = self._spool.with_name(self._spool.name + ".partial")
        try:
            self._spool.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text("".join(json.dumps(asdict(m)) + "\n" for m in pending))
            partial.replace(self._spool)  # all or nothing: a crash mid-write leaves the old spool
        except OSError as exc:
            log.error("MQTT spool %s: cannot write, %d queued events lost (%s)", self._spool, len(pending), exc)
            return
        log.warning("MQTT: broker unreachable at stop; %d queued events kept in %s", len(pending), self._spool)

    def _wait(self, info: mqtt.MQTTMessageInfo, deadline: float) -> None:
        while not info.is_published() and self._connected and time.monotonic() < deadline:
            time.sleep(0.01)

    def _enqueue(self, message: _Message) -> None:
        if message.retain:
            self._latest[message.topic] = message
            return
        if len(self._pending) >= self._config.queue_size:
            self._pending.popleft()  # the oldest goes: recent events describe the room as it is now
            self.events_dropped += 1
        self._pending.append(message)

    def _send(self, message: _Message) -> None:
        info = self._client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
        # QoS 1/2 messages refused for want of a connection stay in paho's store and are resent on
        # reconnect; QoS 0 ones would be lost, so they go back into our queue.
        if info.rc == mqtt.MQTT_ERR_NO_CONN and message.qos == 0:
            with self._lock:
                self._enqueue(message)

    def _drain(self) -> None:
        """Send the backlog in order while new messages keep queueing behind it, then go direct."""
        while True:
            with self._lock:
                if self._pending:
                    message = self._pending.popleft()
                elif self._latest:
                    message = self._latest.pop(next(iter(self._latest)))
                else:
                    self._draining = False
                    return
            self._send(message)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            if str(reason) != self._last_refusal:  # bad credentials repeat every retry; say it once
                log.error("MQTT: broker %s:%d refused the connection: %s", self._config.host, self._config.port, reason)
                self._last_refusal = str(reason)
            return
        backlog = self.queue_depth
        log.info("MQTT: connected to %s:%d%s", self._config.host, self._config.port,
                 f"; sending {backlog} queued messages" if backlog else "")  # fmt: skip
        self._broker_down_logged = False
        self._last_refusal = ""
        client.publish(self._availability, ONLINE, qos=self._config.qos, retain=True)
        for topic in self._subscriptions:
            client.subscribe(topic, qos=self._config.qos)
        with self._lock:
            self._connected = True
            self._draining = True
        self._drain()
        for hook in self._connect_hooks:
            hook()
        self.connected_once.set()

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        if not self._broker_down_logged:
            log.warning(
                "MQTT: broker %s:%d unreachable; retrying with backoff, keeping up to %d events meanwhile",
                self._config.host,
                self._config.port,
                self._config.queue_size,
            )
            self._broker_down_logged = True

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        with self._lock:
            self._connected = False
        if not self._stopped:
            log.warning("MQTT: disconnected from broker (%s); reconnecting", reason)
