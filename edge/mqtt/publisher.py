"""The publisher: the service's only way out to the network (publish / subscribe / stop).

Shaped like Frigate's Communicator (the ``Publisher`` protocol) so another transport could stand in.
The MQTT one is built for a Pi that boots before its broker, loses Wi-Fi, or outlives a broker
restart. It is the one sender of record: events wait in the durable outbox (edge.mqtt.outbox) and
one sender thread hands them to paho in order, a few at a time, while connected; whatever paho had
in flight when a connection died is dropped from paho's store and sent again from the outbox,
oldest first, so a track's events reach the broker in order even across re-sends (at least once:
a consumer drops duplicates by the events' ``run`` and ``seq``). Retained topics keep only their
latest value until the broker has it. Reconnection is paho's, with our own capped, jittered delay,
so a broker back from a restart is found within ``mqtt.reconnect_max`` seconds and a fleet of Pis
does not knock in step.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from edge.config import ConfigError, MqttConfig
from edge.mqtt.link import Link
from edge.mqtt.outbox import Entry, Outbox
from edge.mqtt.payloads import OFFLINE, ONLINE

log = logging.getLogger(__name__)

MessageCallback = Callable[[str, bytes, bool], None]  # topic, payload, retained

# Messages handed to paho and not yet acknowledged. Small, so a link that froze holds little that must
# be sent twice, and large enough that a 20 ms round trip still carries hundreds of events a second.
MAX_INFLIGHT = 10


class Publisher(Protocol):
    """What discovery and the command switch ask of a transport, so they work with any of them; the service
    builds the MQTT one and reads its queue figures for stats."""

    def publish(self, topic: str, payload: str, *, retain: bool = False) -> None: ...
    def subscribe(self, topic: str, callback: MessageCallback) -> None: ...
    def add_connect_hook(self, hook: Callable[[], None]) -> None: ...
    def stop(self, timeout: float = 1.5) -> None: ...


@dataclass
class _Retained:
    topic: str
    payload: str
    qos: int
    sent: bool = False  # handed to paho on the current connection


class _PahoNoise(logging.Filter):
    """paho logs at ERROR what the publisher already says once per outage: "Client is not connected …
    MQTT_CS_CONNECTING" on every reconnection attempt (and "… MQTT_CS_DISCONNECTED" after our own
    disconnect), "failed to receive on socket" when the broker goes; repeating them would only alarm."""

    REPEATS = ("Client is not connected", "failed to receive on socket")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.REPEATS)


_paho_log = log.getChild("paho")
_paho_log.addFilter(_PahoNoise())


def outbox_path(config: MqttConfig, env: dict[str, str] | os._Environ = os.environ) -> Path | None:
    """``mqtt.outbox``, else ``outbox.db`` in systemd's StateDirectory; None (memory only) outside systemd."""
    if config.outbox:
        return Path(config.outbox)
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) / "outbox.db" if state else None


def make_client(
    config: MqttConfig,
    client_id: str,
    *,
    protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv311,
    manual_ack: bool = False,
) -> mqtt.Client:
    """A paho client with the configured credentials and TLS, for the publisher and for subscribers
    (the demo, ``watch``: MQTT 5 for shared subscriptions) that must reach the same broker the same way."""
    # MQTT 5 has no clean_session: clean_start is given with each connect instead
    clean = True if protocol != mqtt.MQTTv5 else None
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        clean_session=clean,
        manual_ack=manual_ack,  # a subscriber that acknowledges only what it has stored
    )
    client.enable_logger(_paho_log)  # packet traces at --log-level debug, callback errors always
    if config.username:
        client.username_pw_set(config.username, config.password or None)
    if config.tls:
        client.tls_set_context(tls_context(config))
    return client


def tls_context(config: MqttConfig) -> ssl.SSLContext:
    """The broker's TLS as paho's ``tls_set`` would make it (the certificate and host name verified), with
    each file loaded on its own, so that a file that is no certificate or a key that is not the
    certificate's is named by its setting; ``check-config`` calls it, so a file it passes connects."""
    try:
        context = ssl.create_default_context(cafile=config.tls_ca or None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"mqtt.tls_ca: {config.tls_ca}: not a CA certificate file ({exc})") from None
    if config.tls_cert:
        try:
            context.load_cert_chain(config.tls_cert, config.tls_key or None)
        except (ssl.SSLError, OSError) as exc:
            files = f"{config.tls_cert} and {config.tls_key}" if config.tls_key else config.tls_cert
            what = "mqtt.tls_cert/mqtt.tls_key" if config.tls_key else "mqtt.tls_cert"
            raise ConfigError(f"{what}: {files}: not a client certificate and its key ({exc})") from None
    return context


class MqttPublisher:
    """paho-mqtt 2 client with a last will on ``availability_topic`` and a durable outbox.

    ``on_connect`` callbacks run in paho's thread after every (re)connection: the place to (re)send
    Home Assistant discovery. ``outbox`` is the journal file (None: memory only).
    """

    def __init__(self, config: MqttConfig, availability_topic: str, outbox: Path | None = None) -> None:
        self._config = config
        self._availability = availability_topic
        self.outbox = Outbox(
            outbox, max_events=config.queue_size, max_age=config.outbox_max_age, sync_interval=config.sync_interval
        )
        self._cond = threading.Condition()
        self._retained: dict[str, _Retained] = {}  # latest value per topic, until the broker has it
        self._mids: dict[int, Entry | _Retained] = {}  # in flight on this connection
        self._early: set[int] = set()  # acks that came back before publish() returned their mid
        self._connected = False
        self._connection = 0  # counts connections lost, so a publish that straddled a loss is not recorded
        self._stopped = False  # stop() has begun: no more "online", no outage lines
        self._closing = False  # stop() is done with the connection: the sender ends
        self._link = Link(config, meanwhile=", events kept in the outbox")
        self._subscriptions: dict[str, MessageCallback] = {}
        self._sub_lock = threading.Lock()
        self._session = False  # a connection is up and has sent its round of subscriptions, or is sending it
        self._asked: dict[int, str] = {}  # subscription mid -> topic, until the broker answers
        self._refused: set[str] = set()  # topics whose refusal was said, until one is granted again
        self._connect_hooks: list[Callable[[], None]] = []
        self.reconnects = 0
        self.connected_once = threading.Event()
        self._client = self._make_client()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt sender", daemon=True)

    def _make_client(self) -> mqtt.Client:
        c = self._config
        client = make_client(c, c.client_id)
        client.will_set(self._availability, OFFLINE, qos=c.qos, retain=True)
        client.max_inflight_messages_set(0)  # no limit in paho: the sender keeps the window, paho never queues
        self._set_retry_delay(client)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        return client

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def queue_depth(self) -> int:
        """Events and retained values the broker has not acknowledged yet."""
        with self._cond:
            retained = len(self._retained)
        return self.outbox.depth + retained

    @property
    def events_dropped(self) -> int:
        return self.outbox.dropped

    def add_connect_hook(self, hook: Callable[[], None]) -> None:
        self._connect_hooks.append(hook)

    def start(self) -> None:
        """Return at once; paho's thread connects in the background (the broker may be down at boot)."""
        c = self._config
        log.info("MQTT: connecting to %s:%d as %s%s", c.host, c.port, c.client_id, " (TLS)" if c.tls else "")
        self.outbox.start()
        self._sender.start()
        self._client.connect_async(c.host, c.port, keepalive=c.keepalive)
        self._client.loop_start()

    def publish(self, topic: str, payload: str, *, retain: bool = False, qos: int | None = None) -> None:
        qos = self._config.qos if qos is None else qos
        if retain:
            with self._cond:
                self._retained[topic] = _Retained(topic, payload, qos)
                self._cond.notify_all()
            return
        self.outbox.append(topic, payload, qos)
        with self._cond:
            self._cond.notify_all()

    def subscribe(self, topic: str, callback: MessageCallback) -> None:
        """Deliver messages on ``topic`` (filters allowed) to ``callback(topic, payload, retained)`` in paho's
        thread; renewed on every reconnection because the session is clean. ``retained``: the broker's stored
        copy, sent because this client subscribed, not a message published just now."""
        self._client.message_callback_add(
            topic, lambda _c, _u, msg: callback(msg.topic, bytes(msg.payload), bool(msg.retain))
        )
        with self._sub_lock:  # either the connection's own round of subscriptions sends it, or this does
            self._subscriptions[topic] = callback
            live = self._session
        if live:
            self._subscribe(self._client, topic)

    def _subscribe(self, client: mqtt.Client, topic: str) -> None:
        with self._sub_lock:  # the broker's answer waits here until its mid is known
            _rc, mid = client.subscribe(topic, qos=self._config.qos)
            if mid is not None:
                self._asked[mid] = topic

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, mid: int, reasons: list[Any], _props: Any) -> None:
        """A subscription the broker's access control refuses (mosquitto's dynamic security does) would leave
        the Detection switch or Home Assistant's restarts unheard without a word: said once per topic."""
        with self._sub_lock:
            topic = self._asked.pop(mid, None)
        if topic is None or not reasons:
            return
        if not reasons[0].is_failure:
            self._refused.discard(topic)
        elif topic not in self._refused:
            self._refused.add(topic)
            c = self._config
            log.error("MQTT: broker %s:%d refused the subscription to %s (%s); messages there do not reach the"
                      " service", c.host, c.port, topic, reasons[0])  # fmt: skip

    def stop(self, timeout: float = 1.5) -> None:
        """Send what is waiting and ``offline`` (retained), then disconnect; gives up after ``timeout``
        seconds so a dead broker cannot hold up a systemd stop. Unacknowledged events stay in the outbox."""
        deadline = time.monotonic() + timeout
        self._stopped = True
        while self.queue_depth and time.monotonic() < deadline:
            time.sleep(0.01)  # a connection (perhaps still being made) delivers what is waiting
        if self._connected:
            goodbye = _Retained(self._availability, OFFLINE, self._config.qos)
            with self._cond:
                self._retained[self._availability] = goodbye
                self._cond.notify_all()
            while self._retained.get(self._availability) is goodbye and self._connected:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.01)
            self._client.disconnect()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._sender.join(max(0.1, deadline - time.monotonic()))
        left = self.outbox.depth
        kept = self.outbox.close()
        if left:
            if kept:
                where = f"kept in {self.outbox.path} for the next start"
            elif self.outbox.path:
                where = f"lost ({self.outbox.path} could not be written)"
            else:
                where = "lost (no outbox file)"
            log.warning("MQTT: %d events not acknowledged by the broker at stop; %s", left, where)
        # loop_stop joins paho's thread, which may sit in a TCP connect for connect_timeout seconds;
        # the thread is a daemon, so a bounded join is enough to let the process exit on time.
        stopper = threading.Thread(target=self._client.loop_stop, daemon=True)
        stopper.start()
        stopper.join(max(0.1, deadline - time.monotonic()))

    # --- the sender thread ---------------------------------------------------------------------------

    def _send_loop(self) -> None:
        """Hand retained values, then events in order, to paho while connected, at most MAX_INFLIGHT at a time."""
        while True:
            with self._cond:
                message = self._next_message()
                while message is None:
                    if self._closing:
                        return
                    self._cond.wait(0.5)
                    message = self._next_message()
                connection = self._connection
            retain = isinstance(message, _Retained)
            info = self._client.publish(message.topic, message.payload, qos=message.qos, retain=retain)
            with self._cond:
                if info.rc != mqtt.MQTT_ERR_SUCCESS or connection != self._connection:
                    continue  # the connection went meanwhile: the outbox was rewound and sends it again
                if info.mid in self._early:
                    self._early.discard(info.mid)
                    self._acknowledged(message, info.mid)
                else:
                    self._mids[info.mid] = message

    def _next_message(self) -> Entry | _Retained | None:
        """Under the lock: what to send next on this connection, or None."""
        if not self._connected:
            return None
        for retained in self._retained.values():
            if not retained.sent:
                retained.sent = True
                return retained
        if len(self._mids) >= MAX_INFLIGHT:
            return None
        return self.outbox.take()

    def _acknowledged(self, message: Entry | _Retained, mid: int) -> None:
        """Under the lock: the broker has ``message``."""
        if isinstance(message, _Retained):
            if self._retained.get(message.topic) is message:
                del self._retained[message.topic]
        else:
            self.outbox.acked(message.id)
        self._cond.notify_all()

    # --- paho's callbacks (paho's thread) -----------------------------------------------------------

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, _reason: Any, _props: Any) -> None:
        with self._cond:
            message = self._mids.pop(mid, None)
            if message is None:
                self._early.add(mid)
            else:
                self._acknowledged(message, mid)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            self._link.refused(reason)
            return
        # paho would re-send its own store of unacknowledged messages after this callback; the outbox
        # re-sends them instead, in order, so paho's copies go.
        client.drop_out_messages()
        c = self._config
        backlog = self.outbox.depth
        queued = f"; sending {backlog} queued events" if backlog else ""
        log.info("MQTT: connected to %s:%d%s%s", c.host, c.port, self._link.connected(), queued)
        if self.connected_once.is_set():
            self.reconnects += 1
        self._set_retry_delay(client)
        with self._sub_lock:
            self._asked.clear()  # answers the last connection still owed never come
            self._session = True
            topics = list(self._subscriptions)
        for topic in topics:
            self._subscribe(client, topic)
        with self._cond:
            if not self._stopped:  # "online" first, before what was retained while away
                online = _Retained(self._availability, ONLINE, c.qos)
                others = {t: m for t, m in self._retained.items() if t != self._availability}
                self._retained = {self._availability: online, **others}
            self._connected = True
            self._cond.notify_all()
        for hook in self._connect_hooks:
            hook()
        self.connected_once.set()

    def _on_connect_fail(self, client: mqtt.Client, _userdata: Any) -> None:
        self._set_retry_delay(client)
        self._link.unreachable()

    def _on_disconnect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        """A connection lost, or an attempt that never became one (refused, no CONNACK from a frozen broker)."""
        with self._sub_lock:
            self._session = False
        with self._cond:
            was_connected, self._connected = self._connected, False
            self._connection += 1
            self._mids.clear()
            self._early.clear()
            for retained in self._retained.values():
                retained.sent = False
            self.outbox.rewind()
            self._cond.notify_all()
        self._set_retry_delay(client)
        if self._stopped or not was_connected:
            return
        self._link.lost(reason)

    def _set_retry_delay(self, client: mqtt.Client) -> None:
        """paho waits exactly the link's next delay: its own backoff has no jitter."""
        delay = self._link.next_delay()
        client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]  # paho takes floats
