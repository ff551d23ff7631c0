"""``emotion-edge watch``: a fleet's events into one database, and a live view of every device.

It runs wherever the broker is reachable (a desktop, the Home Assistant box, a server) and only
subscribes: ``<prefix>/+/events``, ``state`` and ``summary``. Each message is checked against the
schema, and bounds no device comes near, before it is stored; one that fails, or that the database
refuses all the same, is kept in the ``rejects`` table, logged the first time its topic sends one,
and skipped, so a client publishing garbage neither stops the watcher (nor, stored, a later report)
nor floods its log. The watcher makes its own connection attempts, on the service's schedule
(edge.mqtt.link: doubling from 0.5 s to ``mqtt.reconnect_max``), so it can say why one failed: a
broker that cannot be reached, or refuses the connection, is one line per outage naming host:port
and the reason, and every (re)connection is one line. It resubscribes on every connection and keeps
trying until stopped: it is a long-running collector.

With ``--group NAME`` the subscriptions are MQTT 5 shared ones (``$share/NAME/...``): the broker
hands each message to one member of the group, so N watchers split a fleet's load. The broker (or
its cluster: mosquitto, EMQX, HiveMQ, VerneMQ) is the distributed part; watchers share nothing.

Messages are stored in paho's callback, before the acknowledgement goes back, so a QoS 1 event the
broker counts as delivered is on disk; a redelivery is then dropped by the store's keys.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.config import MAX_NAME, MqttConfig
from edge.mqtt.link import Link
from edge.mqtt.publisher import make_client
from edge.watch.live import DeviceView, printable, render_lines, render_table
from edge.watch.store import MAX_DURATION, TS_AHEAD, Store, busy, database_failure

log = logging.getLogger(__name__)

LEAVES = ("events", "state", "summary")
EVENT_TYPES = ("start", "change", "end")
SESSION_EXPIRY = 86400  # seconds the broker keeps a named watcher's queue while it is away

# The schema check's bounds: each far beyond what a device publishes (edge.mqtt.payloads), and each what keeps
# one message from another client from crashing the watcher or a later report, or from swelling either.
MAX_PAYLOAD = 65536  # bytes; a device's largest message here, an event, is under 1 kB
MAX_INT = 2**53  # |track|, |seq|, |faces|: what a JSON number holds exactly, inside SQLite's 64-bit INTEGER
MAX_LABEL = 64  # characters of an emotion or a score's label; a model's are words such as "surprise"
MAX_SCORES = 16  # labels in ``scores``; a device sends its model's, 7
# How far ``ts`` may lie from the arrival. Before it: the outbox keeps an unacknowledged event for up to
# mqtt.outbox_max_age (a year at most), then the broker holds it up to SESSION_EXPIRY for a named watcher,
# and a Pi without a real-time clock runs behind until NTP sets it. After it: clock skew, or a clock set to
# local time (14 h at most). A later date would hold back the device's real states and stretch its visits.
TS_BEHIND = 365 * 86400 + SESSION_EXPIRY + 86400
QUOTE = 40  # characters of a faulty value quoted in a reason: enough to recognise it, never a flood
TOPIC_SHOWN = 200  # characters of a topic in a log line (MQTT allows 65535 bytes)
MAX_DEVICES = 1000  # devices the live view keeps (those heard from last); the database keeps every one
MAX_MALFORMED_TOPICS = 1000  # topics whose first malformed message is logged; later ones are only counted


class Malformed(ValueError):
    """A message that does not follow the schema; str() says what is wrong with it."""


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= QUOTE else f"{text[:QUOTE]}..."


def _need(body: Mapping[str, Any], key: str, kinds: type | tuple[type, ...]) -> Any:
    value = body.get(key)
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise Malformed(f"{key!r} missing or not {getattr(kinds, '__name__', kinds)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise Malformed(f"{key!r} is not a finite number")
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise Malformed(f"{key!r} is {_quote(value)}, beyond 2**53")
    return value


def _number(body: Mapping[str, Any], key: str, hi: float) -> None:
    value = _need(body, key, (int, float))
    if not 0 <= value <= hi:
        raise Malformed(f"{key!r} is {_quote(value)}, outside 0..{hi}")


def _label(what: str, value: str) -> None:
    if len(value) > MAX_LABEL:
        raise Malformed(f"{what} {_quote(value)} is longer than {MAX_LABEL} characters")


def _scores(body: Mapping[str, Any]) -> None:
    scores = _need(body, "scores", dict)
    if len(scores) > MAX_SCORES:
        raise Malformed(f"'scores' has {len(scores)} labels, more than {MAX_SCORES}")
    for label, p in scores.items():
        _label("score label", label)
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p <= 1:
            raise Malformed(f"score {_quote(label)} is {_quote(p)}, not a number from 0 to 1")


def _box(body: Mapping[str, Any]) -> None:
    """An event's face box, if it has one (older versions sent none): x, y, width, height in pixels."""
    if "box" not in body:
        return
    box = body["box"]
    if not (isinstance(box, list) and len(box) == 4 and all(type(v) is int and 0 <= v <= MAX_INT for v in box)):
        raise Malformed(f"'box' is {_quote(box)}, not 4 pixel counts [x, y, width, height]")


def _ts(body: Mapping[str, Any], received: float) -> None:
    text = _need(body, "ts", str)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Malformed(f"'ts' is not an ISO 8601 time: {_quote(text)}") from None
    if when.tzinfo is None:
        raise Malformed(f"'ts' {_quote(text)} has no time zone")
    t = when.timestamp()
    if t > received + TS_AHEAD:
        raise Malformed(f"'ts' {_quote(text)} is more than {TS_AHEAD // 3600} h after it arrived")
    if t < received - TS_BEHIND:
        raise Malformed(f"'ts' {_quote(text)} is more than {TS_BEHIND // 86400} days before it arrived")


def parse(topic: str, payload: bytes, received: float | None = None) -> tuple[str, dict[str, Any]]:
    """(leaf, body) of a message on ``<prefix>/<device>/<leaf>`` arriving at ``received`` (epoch seconds,
    default now); raises Malformed naming the fault."""
    received = time.time() if received is None else received
    levels = topic.split("/")
    leaf, device = levels[-1], levels[-2] if len(levels) >= 3 else ""
    if leaf not in LEAVES or not device:
        raise Malformed(f"unexpected topic {_quote(topic)}")
    if len(payload) > MAX_PAYLOAD:
        raise Malformed(f"{len(payload)} bytes, more than {MAX_PAYLOAD}")
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Malformed(f"not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise Malformed("not a JSON object")
    try:  # "\ud800" is valid JSON but no character: SQLite, and a report's UTF-8 page, cannot take it
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise Malformed("a string in it is not Unicode text (a lone surrogate)") from None
    if body.get("schema") != 1:
        raise Malformed(f"schema {_quote(body.get('schema'))}, expected 1")
    if body.get("device") != device:
        raise Malformed(f"device {_quote(body.get('device'))} does not match the topic's {_quote(device)}")
    if len(device) > MAX_NAME:
        raise Malformed(f"device id {_quote(device)} is longer than {MAX_NAME} characters")
    _ts(body, received)
    if leaf == "events":
        if body.get("type") not in EVENT_TYPES:
            raise Malformed(f"event type {_quote(body.get('type'))}, expected one of {', '.join(EVENT_TYPES)}")
        _need(body, "track", int)
        _label("emotion", _need(body, "emotion", str))
        _number(body, "confidence", 1)
        _number(body, "duration", MAX_DURATION)
        _scores(body)
        _box(body)
        if "seq" in body:  # the store's key, with device and run
            _need(body, "seq", int)
        if "run" in body and len(_need(body, "run", str)) > MAX_NAME:
            raise Malformed(f"run id {_quote(body['run'])} is longer than {MAX_NAME} characters")
    elif leaf == "state":
        _need(body, "faces", int)
        _label("emotion", _need(body, "emotion", str))
    else:
        _need(body, "share", dict)
        _label("predominant", _need(body, "predominant", str))
    return leaf, body


def store_message(store: Store, leaf: str, body: dict[str, Any], received: float) -> bool:
    """Store a parsed message in its table; False when it was there already."""
    if leaf == "events":
        return store.add_event(body, received)
    if leaf == "state":
        return store.add_state(body, received)
    return store.add_summary(body, received)


@dataclass
class Counts:
    stored: int = 0
    duplicates: int = 0
    malformed: int = 0
    per_device: OrderedDict[str, DeviceView] = field(default_factory=OrderedDict)  # least recently heard first

    def view(self, device: str) -> DeviceView:
        """The device's view, now the most recently heard; the least recent one goes past MAX_DEVICES, so
        made-up device names cannot grow it without bound."""
        view = self.per_device.pop(device, None) or DeviceView(device)
        self.per_device[device] = view
        if len(self.per_device) > MAX_DEVICES:
            self.per_device.popitem(last=False)
        return view


class Watcher:
    """Subscribes, stores, counts; ``run()`` blocks until ``stop()`` (or a signal, via ``serve``)."""

    def __init__(
        self,
        config: MqttConfig,
        store: Store,
        *,
        group: str | None = None,
        client_id: str | None = None,
        out: TextIO = sys.stdout,
        refresh: float | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.group = group
        self.out = out
        self.tty = out.isatty()
        self.refresh = refresh if refresh is not None else (1.0 if self.tty else 10.0)
        self.counts = Counts()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._malformed_topics: set[str] = set()
        self.failure = ""  # why the watcher stopped by itself: the database refused to store
        # Connection state, touched only by the thread in run() (paho's callbacks run there too).
        self._link = Link(config)
        self._connected = False
        self._refused = False  # the current attempt got a CONNACK refusing it
        durable = client_id is not None
        client_id = client_id or f"emotion-edge-watch-{socket.gethostname()}-{secrets.token_hex(3)}"
        self.client = make_client(config, client_id, protocol=mqtt.MQTTv5, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._away = ""  # the outage the current connection ended, said once the broker grants the subscription
        self._connect_properties: Properties | None = None
        self._clean_start = not durable
        if durable:  # a named watcher's queue outlives its restarts, so nothing published meanwhile is lost
            self._connect_properties = Properties(PacketTypes.CONNECT)
            self._connect_properties.SessionExpiryInterval = SESSION_EXPIRY
        self.client_id = client_id

    def filters(self) -> list[str]:
        base = [f"{self.config.topic_prefix}/+/{leaf}" for leaf in LEAVES]
        return [f"$share/{self.group}/{topic}" for topic in base] if self.group else base

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason: Any, _p: object = None) -> None:
        if reason.is_failure:
            self._refused = True
            self._link.refused(reason)
            return
        self._away = self._link.connected()
        self._connected = True
        client.subscribe([(topic, self.config.qos) for topic in self.filters()])

    def _on_subscribe(self, _c: mqtt.Client, _u: object, _mid: int, reasons: list[Any], _p: object = None) -> None:
        """Said on the broker's answer, not on asking: from this line on, what is published is stored; a
        filter the broker's ACL refuses would otherwise look like a quiet fleet."""
        filters = self.filters()  # answered in the order asked; a broker answering fewer is not trusted with more
        granted = [f for f, reason in zip(filters, reasons, strict=False) if not reason.is_failure]
        for topic, reason in zip(filters, reasons, strict=False):
            if reason.is_failure:
                log.error("MQTT: broker %s refused the subscription to %s (%s); nothing published there is stored",
                          self._link.broker, topic, reason)  # fmt: skip
        if granted:
            log.info("MQTT: connected to %s%s, subscribed to %s", self._link.broker, self._away, ", ".join(granted))

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object = None) -> None:
        """A connection lost, or an attempt that never became one (refused, or no CONNACK from a frozen broker)."""
        was_connected, self._connected = self._connected, False
        if self._stopping.is_set():
            return
        if was_connected:
            self._link.lost(reason)
        elif not self._refused:  # connected to something that closed or never answered as a broker would
            self._link.unreachable(f"no CONNACK: {reason}")

    def _on_message(self, client: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        """Stores the message, then acknowledges it: one the database cannot take stops the watcher unacknowledged,
        so a named watcher's broker hands it over again after the restart."""
        received = time.time()
        payload = bytes(msg.payload)
        waited = False
        while True:
            try:
                self._take(msg.topic, payload, received)
                break
            except sqlite3.Error as exc:
                if self._stopping.is_set():
                    return
                if not busy(exc):
                    self.failure = f"{self.store.path}: cannot store messages ({exc})"
                    log.error("watch: %s; stopping, the message in hand unacknowledged", self.failure)
                    self.stop()
                    return
                if not waited:  # waits while another program holds the lock: each try waits the busy timeout
                    log.warning("watch: %s is locked by another program; waiting to store", self.store.path)
                    waited = True
        if waited:
            log.info("watch: %s is writable again", self.store.path)
        client.ack(msg.mid, msg.qos)

    def _take(self, topic: str, payload: bytes, received: float) -> None:
        """One message into the store, or into its rejects; a database error passes up."""
        try:
            leaf, body = parse(topic, payload, received)
            new = store_message(self.store, leaf, body, received)
        except Malformed as exc:
            self._reject(topic, payload, str(exc), received)
            return
        except Exception as exc:  # a value the schema check let through and SQLite refuses: skipped like one it caught
            if database_failure(exc):
                raise
            self._reject(topic, payload, f"cannot be stored ({type(exc).__name__}: {exc})", received)
            return
        with self._lock:
            view = self.counts.view(body["device"])
            if leaf == "events":
                if new:
                    self.counts.stored += 1
                    view.seen_event(received)
                else:
                    self.counts.duplicates += 1
            elif leaf == "state":
                view.seen_state(body)
            else:
                view.seen_summary(body)

    def _reject(self, topic: str, payload: bytes, reason: str, received: float) -> None:
        self.store.add_reject(topic, payload, reason, received)
        with self._lock:
            self.counts.malformed += 1
            # Once MAX_MALFORMED_TOPICS topics are known, the next new one is said in one line, and no more.
            first = topic not in self._malformed_topics and len(self._malformed_topics) <= MAX_MALFORMED_TOPICS
            if first:
                self._malformed_topics.add(topic)
            full = len(self._malformed_topics) > MAX_MALFORMED_TOPICS
        if first and full:
            log.warning("malformed messages from more than %d topics: from now on they are only counted "
                        "(and kept in the rejects table)", MAX_MALFORMED_TOPICS)  # fmt: skip
        elif first:
            shown = topic if len(topic) <= TOPIC_SHOWN else f"{topic[:TOPIC_SHOWN]}..."
            log.warning("%s: malformed message skipped (%s); kept in the rejects table, "
                        "further ones from this topic are only counted", printable(shown), reason)  # fmt: skip

    def _show(self) -> None:
        while not self._stopping.wait(self.refresh):
            with self._lock:
                views = [v.snapshot(time.time()) for v in self.counts.per_device.values()]
                totals = (self.counts.stored, self.counts.duplicates, self.counts.malformed)
            text = render_table(views, *totals) if self.tty else render_lines(views, *totals)
            self.out.write(("\x1b[H\x1b[2J" if self.tty else "") + text)
            self.out.flush()

    def run(self) -> None:
        c = self.config
        log.info("watch: storing into %s from broker %s%s as %s%s", self.store.path, self._link.broker,
                 " (TLS)" if c.tls else "", self.client_id,
                 f" in shared group {self.group}" if self.group else "")  # fmt: skip
        # Only records where and how to connect: the attempts are made below.
        self.client.connect_async(
            c.host, c.port, keepalive=c.keepalive, clean_start=self._clean_start, properties=self._connect_properties
        )
        shower = threading.Thread(target=self._show, name="watch-view", daemon=True)
        shower.start()
        while not self._stopping.is_set():
            if self._connect():
                if self._stopping.is_set():  # stopped while the connection was being made
                    self.client.disconnect()
                rc = mqtt.MQTT_ERR_SUCCESS
                while rc == mqtt.MQTT_ERR_SUCCESS and self.client.socket() is not None:  # until lost, refused, stop()
                    rc = self.client.loop(1.0)
            self._stopping.wait(self._link.next_delay())
        shower.join(timeout=2)

    def _connect(self) -> bool:
        """One attempt to open the connection; False (having said why, once per outage) if it failed."""
        self._refused = False
        try:
            self.client.reconnect()
        except OSError as exc:  # refused, DNS failure, timeout, TLS handshake
            if not self._stopping.is_set():
                self._link.unreachable(exc.strerror or str(exc) or type(exc).__name__)
            return False
        return True

    def stop(self) -> None:
        """Safe from a signal handler: the disconnect is sent from another thread (the interrupted one may
        hold paho's locks), the loop in run() then ends, and a wait between attempts is cut short."""
        self._stopping.set()
        threading.Thread(target=self.client.disconnect, name="watch-stop", daemon=True).start()


def serve(config: MqttConfig, db: Path, *, group: str | None, client_id: str | None, refresh: float | None) -> int:
    store = Store(db)
    watcher = Watcher(config, store, group=group, client_id=client_id, refresh=refresh)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        watcher.stop()
        signal.signal(signum, signal.SIG_DFL)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        watcher.run()
    finally:
        store.close()
    c = watcher.counts
    log.info("watch: stopped; %d events stored, %d duplicates dropped, %d malformed messages skipped",
             c.stored, c.duplicates, c.malformed)  # fmt: skip
    return 1 if watcher.failure else 0
