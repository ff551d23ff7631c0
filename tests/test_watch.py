"""``emotion-edge watch``: real processes against a real mosquitto; the SQLite file is what they leave behind."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from helpers import REPO, Broker, edge_command, free_port, wait_until

from edge.mqtt import payloads
from edge.watch import live
from edge.watch.loadgen import device_events
from edge.watch.store import SCHEMA_VERSION, Store, StoreError
from edge.watch.watcher import Malformed, parse

START = 1_790_000_000.0  # 2026-09-21: any fixed wall time


def events(device: str, count: int, seed: int = 1) -> list[dict]:
    return device_events(device, count, random.Random(seed), START)


# --- the schema check and the store, in-process -----------------------------------------------------


def test_parse_accepts_every_published_kind_and_names_the_fault_in_bad_ones():
    body = events("hall", 1)[0]
    assert parse("emotion-edge/hall/events", payloads.encode(body).encode()) == ("events", body)
    state = {"schema": 1, "ts": "2026-09-21T10:00:00.000Z", "device": "hall", "faces": 0, "emotion": "none"}
    assert parse("site/a/emotion-edge/hall/state", json.dumps(state).encode())[0] == "state"
    bad = {
        b"\xff\xfe": "not JSON",
        b"[1, 2]": "not a JSON object",
        json.dumps({**body, "schema": 2}).encode(): "schema 2",
        json.dumps({**body, "device": "kitchen"}).encode(): "does not match the topic's 'hall'",
        json.dumps({**body, "type": "begin"}).encode(): "event type 'begin'",
        json.dumps({**body, "track": "1"}).encode(): "'track' missing or not int",
        json.dumps({**body, "ts": "yesterday"}).encode(): "'ts' is not an ISO 8601 time",
        json.dumps({k: v for k, v in body.items() if k != "duration"}).encode(): "'duration' missing",
    }
    for payload, reason in bad.items():
        with pytest.raises(Malformed, match=reason):
            parse("emotion-edge/hall/events", payload)


def test_store_keeps_each_event_once_by_run_and_seq_else_by_content(tmp_path):
    store = Store(tmp_path / "w.db")
    first, second = events("hall", 2)
    assert store.add_event(first, 1.0) and store.add_event(second, 1.0)
    assert not store.add_event(first, 2.0)  # a QoS 1 redelivery
    assert not store.add_event({**first, "confidence": 0.5}, 2.0)  # same (device, run, seq): the same event
    legacy = {k: v for k, v in first.items() if k not in ("run", "seq")}  # a device from before run/seq
    assert store.add_event(legacy, 3.0) and not store.add_event(dict(reversed(legacy.items())), 3.0)
    assert store.count("events") == 3
    store.close()
    db = sqlite3.connect(tmp_path / "w.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_database_of_another_schema_version_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "future.db"
    sqlite3.connect(path).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=rf"future\.db: database schema version {SCHEMA_VERSION + 1}"):
        Store(path)
    with pytest.raises(StoreError, match="no such database"):
        Store(tmp_path / "missing.db", readonly=True)


def test_live_table_shows_faces_emotion_since_and_rate():
    view = live.DeviceView("hall")
    view.seen_state({"ts": "2026-09-21T10:00:00.000Z", "faces": 2, "emotion": "happy"})
    view.seen_state({"ts": "2026-09-21T10:00:05.000Z", "faces": 3, "emotion": "happy"})  # same emotion: same since
    for t in (100.0, 130.0, 150.0):
        view.seen_event(t)
    row = view.snapshot(now=170.0)  # the event at 100 s is over a minute old
    table = live.render_table([row], 3, 1, 0)
    assert table.splitlines()[0].split() == ["device", "faces", "emotion", "since", "events/min", "last", "summary"]
    assert table.splitlines()[1].split() == ["hall", "3", "happy", "10:00:00Z", "2.0", "-"]
    assert live.render_lines([row], 3, 1, 0).splitlines() == [
        "device=hall faces=3 emotion=happy since=10:00:00Z events_per_min=2.0 last_summary=-",
        "watch: 3 events stored, 1 duplicates dropped, 0 malformed skipped",
    ]


# --- the watch process --------------------------------------------------------------------------------


class WatchProcess:
    """``python -m edge watch …`` with stdout a pipe (so: plain lines) and stderr read line by line."""

    def __init__(self, port: int, db: Path, env: dict[str, str], *extra: str) -> None:
        self.db = db
        self.lines: list[str] = []
        self.out: list[str] = []
        args = ["watch", "--mqtt-host", "127.0.0.1", "--mqtt-port", str(port), "--db", str(db), "--refresh", "0.3"]
        self.process = subprocess.Popen(
            edge_command(*args, *extra), env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for stream, sink in ((self.process.stderr, self.lines), (self.process.stdout, self.out)):
            threading.Thread(
                target=lambda s=stream, k=sink: k.extend(line.rstrip("\n") for line in s), daemon=True
            ).start()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 20) -> None:
        wait_until(lambda: self.log.count(text) >= count or self.process.poll() is not None, timeout, repr(text))
        assert self.log.count(text) >= count, f"watch exited with {self.process.returncode}:\n{self.log}"

    def stored(self) -> int:
        if not self.db.exists():
            return 0
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as db:
            try:
                return db.execute("SELECT count(*) FROM events").fetchone()[0]
            except sqlite3.OperationalError:  # tables not created yet
                return 0

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(10)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def watch(edge_env: dict[str, str]) -> Iterator[Callable[..., WatchProcess]]:
    started: list[WatchProcess] = []

    def start(port: int, db: Path, *extra: str) -> WatchProcess:
        started.append(WatchProcess(port, db, edge_env, *extra))
        return started[-1]

    yield start
    for w in started:
        w.kill()


def publisher(port: int) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-pub-{port}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def publish_all(client: mqtt.Client, messages: list[tuple[str, bytes | str]]) -> None:
    for info in [client.publish(topic, payload, qos=1) for topic, payload in messages]:
        info.wait_for_publish(5)


def test_watch_survives_a_malformed_message_and_a_broker_restart_losing_nothing(
    broker: Broker, broker_factory: Callable[..., Broker], watch, tmp_path
):
    w = watch(broker.port, tmp_path / "w.db")
    w.wait_for_log("subscribing to emotion-edge/+/events")
    before, after = events("hall", 10, seed=1), events("hall", 10, seed=2)  # two runs of the same device
    topic = "emotion-edge/hall/events"
    client = publisher(broker.port)
    publish_all(client, [(topic, payloads.encode(b)) for b in before[:5]])
    publish_all(client, [(topic, b"{not json"), (topic, payloads.encode({**before[0], "schema": 2}))])
    publish_all(client, [(topic, payloads.encode(b)) for b in [before[2], *before[5:]]])  # one redelivered
    state = {"schema": 1, "ts": "2026-09-21T10:00:00.000Z", "device": "hall", "faces": 1, "emotion": "sad"}
    publish_all(client, [("emotion-edge/hall/state", json.dumps(state))])
    wait_until(lambda: w.stored() == 10, 15, "the first 10 events in the database")
    client.disconnect()
    client.loop_stop()

    broker.stop()
    w.wait_for_log("connection to the broker lost")
    broker_factory(broker.port).start()
    w.wait_for_log("subscribing to", count=2, timeout=30)  # reconnected by itself and subscribed again
    client = publisher(broker.port)
    publish_all(client, [(topic, b"\x00garbage"), *((topic, payloads.encode(b)) for b in after)])
    wait_until(lambda: w.stored() == 20, 15, "all 20 events in the database")
    wait_until(lambda: any(line.startswith("device=hall faces=1 emotion=sad") for line in w.out), 10, "a view line")
    client.disconnect()
    client.loop_stop()

    assert w.process.poll() is None, w.log
    assert w.stop() == 0, w.log
    assert w.log.count("malformed message skipped") == 1, w.log  # logged once for the topic, then counted
    assert "20 events stored, 1 duplicates dropped, 3 malformed messages skipped" in w.log
    db = sqlite3.connect(tmp_path / "w.db")
    assert db.execute("SELECT count(DISTINCT run), count(*) FROM events").fetchone() == (2, 20)
    reasons = [r[0] for r in db.execute("SELECT reason FROM rejects ORDER BY id")]
    assert len(reasons) == 3 and reasons[1] == "schema 2, expected 1", reasons
    assert reasons[0].startswith("not JSON") and reasons[2].startswith("not JSON"), reasons
    assert db.execute("SELECT payload FROM rejects ORDER BY id").fetchall()[0][0] == b"{not json"


def test_watch_started_before_its_broker_says_so_once_then_connects_when_it_comes(
    broker_factory: Callable[..., Broker], watch, tmp_path
):
    port = free_port()  # nothing listens there yet
    w = watch(port, tmp_path / "w.db")
    w.wait_for_log("unreachable")
    assert f"watch: storing into {tmp_path / 'w.db'} from broker 127.0.0.1:{port} as emotion-edge-watch-" in w.log
    assert f"WARNING MQTT: broker 127.0.0.1:{port} unreachable (Connection refused); retrying every 5 s at most" in (
        w.log
    )
    time.sleep(3.5)  # attempts at 0, 1 and 3 s: all refused, said once
    assert w.process.poll() is None, w.log
    broker_factory(port).start()
    w.wait_for_log(f"MQTT: connected to 127.0.0.1:{port} after ", timeout=15)
    assert " s away, subscribing to emotion-edge/+/events" in w.log
    client = publisher(port)
    publish_all(client, [("emotion-edge/hall/events", payloads.encode(b)) for b in events("hall", 3)])
    wait_until(lambda: w.stored() == 3, 10, "3 events stored")
    client.disconnect()
    client.loop_stop()
    assert w.stop() == 0, w.log
    assert w.log.count("unreachable") == 1 and "Traceback" not in w.log, w.log
    assert "watch: stopped; 3 events stored" in w.log


def test_watch_refused_by_the_broker_names_it_once_and_stops_on_sigint(
    broker_factory: Callable[..., Broker], watch, tmp_path
):
    broker = broker_factory(listener="allow_anonymous false").start()  # no user of ours: every CONNECT refused
    w = watch(broker.port, tmp_path / "w.db")
    w.wait_for_log("refused the connection")
    assert f"ERROR MQTT: broker 127.0.0.1:{broker.port} refused the connection: Not authorized" in w.log
    time.sleep(3.5)  # refused again at 1 and 3 s
    w.process.send_signal(signal.SIGINT)
    assert w.process.wait(10) == 0, w.log
    assert w.log.count("refused the connection") == 1, w.log
    assert "unreachable" not in w.log and "connection to the broker lost" not in w.log and "Traceback" not in w.log, (
        w.log
    )
    assert w.log.splitlines()[-1].endswith("watch: stopped; 0 events stored, 0 duplicates dropped, "
                                          "0 malformed messages skipped")  # fmt: skip


def test_a_named_watcher_gets_what_was_published_while_it_was_stopped(broker: Broker, watch, tmp_path):
    """--client-id: the broker keeps the watcher's session (MQTT 5 session expiry) across its restart."""
    db = tmp_path / "w.db"
    first = watch(broker.port, db, "--client-id", "archive-1")
    first.wait_for_log("subscribing to")
    bodies = events("hall", 6)
    client = publisher(broker.port)
    publish_all(client, [("emotion-edge/hall/events", payloads.encode(b)) for b in bodies[:3]])
    wait_until(lambda: first.stored() == 3, 10, "3 events stored")
    assert first.stop() == 0
    publish_all(client, [("emotion-edge/hall/events", payloads.encode(b)) for b in bodies[3:]])  # nobody listening
    second = watch(broker.port, db, "--client-id", "archive-1")
    wait_until(lambda: second.stored() == 6, 10, "the 3 events queued by the broker while the watcher was away")
    client.disconnect()
    assert second.stop() == 0


def test_watch_refuses_a_database_it_cannot_read_with_one_line(edge_env, tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_text("not a database\n" * 100)
    done = subprocess.run(
        edge_command("watch", "--mqtt-port", "1", "--db", str(bad)), env=edge_env, cwd=REPO,
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"{bad}: cannot use database" in done.stderr
    assert "Traceback" not in done.stderr


def test_load_fifty_devices_into_two_grouped_watchers_store_every_event_exactly_once(
    broker_factory: Callable[..., Broker], watch, edge_env, tmp_path, capsys
):
    """The benchmark of issue 16: its rate is printed, not asserted. mosquitto drops QoS 1 messages
    queued past ``max_queued_messages`` (1000 by default) for a subscriber that falls behind; a broker
    serving watchers is set higher (docs/watch.md)."""
    devices, per_device = 50, 40
    broker = broker_factory(listener="allow_anonymous true\nmax_queued_messages 1000000").start()
    a = watch(broker.port, tmp_path / "a.db", "--group", "fleet")
    b = watch(broker.port, tmp_path / "b.db", "--group", "fleet")
    for w in (a, b):
        w.wait_for_log("subscribing to $share/fleet/emotion-edge/+/events")
    time.sleep(0.3)  # the broker has both members of the group before the first message
    gen = subprocess.run(
        [*edge_command()[:2], "edge.watch.loadgen", "--port", str(broker.port), "--devices", str(devices),
         "--events", str(per_device), "--seconds", "60"],
        env=edge_env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    total = devices * per_device
    wait_until(lambda: a.stored() + b.stored() >= total, 60, f"{total} events across both databases")
    time.sleep(0.5)  # nothing more arrives
    assert a.stop() == 0 and b.stop() == 0

    rows = {}
    for w in (a, b):
        with sqlite3.connect(w.db) as db:
            rows[w] = db.execute("SELECT device, run, seq, received FROM events").fetchall()
    keys_a = {r[:3] for r in rows[a]}
    keys_b = {r[:3] for r in rows[b]}
    assert len(keys_a) == len(rows[a]) and len(keys_b) == len(rows[b])
    assert not keys_a & keys_b  # the group split the load: no event went to both
    assert len(keys_a | keys_b) == total
    assert {(d, s) for d, _, s in keys_a | keys_b} == {
        (f"load-{n:03d}", s) for n in range(devices) for s in range(1, per_device + 1)
    }
    assert rows[a] and rows[b]
    received = [r[3] for group in rows.values() for r in group]
    with capsys.disabled():
        print(
            f"\nwatch load: {gen.stdout.strip()}; stored {len(received)} events in two watchers "
            f"({len(rows[a])} + {len(rows[b])}) at {len(received) / (max(received) - min(received)):.0f} events/s"
        )
