"""The MQTT publisher and Home Assistant discovery against a real mosquitto on a free port, and the link's
retry schedule and outage lines."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import Broker, Subscriber, make_pki, wait_until

from edge.config import Config, load
from edge.mqtt.link import Link
from edge.mqtt.payloads import Topics
from edge.mqtt.publisher import MqttPublisher, outbox_path


def make_config(tmp_path: Path, port: int, **mqtt: object) -> Config:
    overrides = {"mqtt.port": port, "mqtt.device_id": "testpi", "mqtt.host": "127.0.0.1"}
    overrides.update({f"mqtt.{k}": v for k, v in mqtt.items()})
    empty = tmp_path / "config.toml"
    empty.write_text("")
    return load(empty, env={}, overrides=overrides)


@pytest.fixture
def publishers() -> Iterator[Callable[[Config], MqttPublisher]]:
    made: list[MqttPublisher] = []

    def make(config: Config) -> MqttPublisher:
        topics = Topics.of(config.mqtt.topic_prefix, config.mqtt.device_id)
        made.append(MqttPublisher(config.mqtt, topics.availability))
        return made[-1]

    yield make
    for p in made:
        p.stop(timeout=1)


TOPICS = Topics.of("emotion-edge", "testpi")


def test_availability_is_retained_online_then_offline_on_stop(
    tmp_path: Path, broker: Broker, subscribe: Callable[..., Subscriber], publishers
) -> None:
    pub = publishers(make_config(tmp_path, broker.port))
    early = subscribe(broker.port, [TOPICS.availability])
    pub.start()
    early.wait_for(TOPICS.availability, lambda m: m.text == "online")
    # Subscribing after the fact: the retained value arrives with the retain flag, as Home Assistant sees it.
    late = subscribe(broker.port, [TOPICS.availability])
    first = late.wait_for(TOPICS.availability)
    assert (first.text, first.retain) == ("online", True)
    pub.stop()
    early.wait_for(TOPICS.availability, lambda m: m.text == "offline")
    after = subscribe(broker.port, [TOPICS.availability])
    m = after.wait_for(TOPICS.availability)
    assert (m.text, m.retain) == ("offline", True)


def test_online_goes_out_before_what_was_retained_while_away(
    tmp_path: Path, broker: Broker, subscribe: Callable[..., Subscriber], publishers
) -> None:
    """A value kept while not connected reaches a subscriber after the device says it is online, so Home
    Assistant never takes it from a device it still counts as unavailable."""
    sub = subscribe(broker.port, [f"{TOPICS.base}/#"])
    pub = publishers(make_config(tmp_path, broker.port))
    pub.publish(TOPICS.state, "made before the connection", retain=True)
    pub.publish(TOPICS.stats, "this too", retain=True)
    pub.start()
    wait_until(lambda: len(sub.messages) >= 3, 15, "online, state and stats")
    assert [m.topic for m in sub.messages][:3] == [TOPICS.availability, TOPICS.state, TOPICS.stats]
    assert sub.messages[0].text == "online"


def test_stop_right_after_start_delivers_what_was_published_and_logs_no_error(
    tmp_path: Path, broker: Broker, subscribe: Callable[..., Subscriber], caplog
) -> None:
    """A service stopped while its first connection is still being made must not lose its events;
    and paho 2.2's "Client is not connected" after our own disconnect is not an error to report
    (before the fix about half of these stops logged it)."""
    sub = subscribe(broker.port, [TOPICS.events])
    config = make_config(tmp_path, broker.port)
    for n in range(12):
        pub = MqttPublisher(config.mqtt, TOPICS.availability)
        pub.start()
        pub.publish(TOPICS.events, json.dumps({"n": n}))
        pub.stop()
    wait_until(lambda: len(sub.on(TOPICS.events)) == 12, 10, "all 12 events")
    assert [json.loads(m.payload)["n"] for m in sub.on(TOPICS.events)] == list(range(12))
    assert [r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR")] == []


def test_broker_down_at_start_then_up_delivers_queued_events_in_order(
    tmp_path: Path, broker_factory: Callable[..., Broker], subscribe: Callable[..., Subscriber], publishers
) -> None:
    broker = broker_factory(persistent=True).start()
    # A durable subscriber registered before the outage receives whatever reaches the broker later,
    # whether it reconnects before or after the publisher does.
    subscribe(broker.port, [f"{TOPICS.base}/#"], durable_id="durable-queue-test").close()
    broker.stop()

    pub = publishers(make_config(tmp_path, broker.port, queue_size=5))
    pub.start()  # nothing listens on the port: start must neither block nor fail
    for i in range(8):
        pub.publish(TOPICS.events, json.dumps({"n": i}))
    pub.publish(TOPICS.state, "old", retain=True)
    pub.publish(TOPICS.state, "new", retain=True)
    assert not pub.connected
    assert pub.events_dropped == 3, "the bound of 5 keeps the newest 5 of 8 events"
    assert pub.queue_depth == 6, "5 events + the latest value of one retained topic"

    broker.start()
    wait_until(lambda: pub.connected and pub.queue_depth == 0, 40, "the publisher to reconnect and send its queue")
    sub = subscribe(broker.port, [f"{TOPICS.base}/#"], durable_id="durable-queue-test")
    wait_until(lambda: len(sub.on(TOPICS.events)) == 5, 15, "the 5 queued events after the broker came up")
    assert [json.loads(m.payload)["n"] for m in sub.on(TOPICS.events)] == [3, 4, 5, 6, 7]
    sub.wait_for(TOPICS.state)
    assert {m.text for m in sub.on(TOPICS.state)} == {"new"}, "only the latest retained value is kept"


def test_subscriptions_deliver_and_survive_a_broker_restart(
    tmp_path: Path, broker: Broker, subscribe: Callable[..., Subscriber], publishers
) -> None:
    pub = publishers(make_config(tmp_path, broker.port))
    got: list[tuple[str, bytes]] = []
    pub.subscribe("testing/in", lambda topic, payload, _retained: got.append((topic, payload)))
    pub.start()
    sender = subscribe(broker.port, ["unused"])

    def deliver(payload: str) -> None:
        # The publisher's SUBSCRIBE and our PUBLISH travel on different connections, so resend until
        # the broker has the subscription; what is tested is that one is (re)made at all.
        def arrived() -> bool:
            if ("testing/in", payload.encode()) in got:
                return True
            sender.client.publish("testing/in", payload, qos=1)
            return False

        wait_until(arrived, 20, f"{payload!r} on the publisher's subscription")

    deliver("one")
    broker.stop()
    wait_until(lambda: not pub.connected, 10, "the publisher to notice the broker stopped")
    broker.start()
    wait_until(lambda: pub.connected, 40, "the publisher to reconnect")
    wait_until(lambda: sender.client.is_connected(), 40, "the test client to reconnect")
    deliver("two")


@pytest.mark.skipif(not shutil.which("openssl") or not shutil.which("mosquitto_passwd"), reason="needs openssl")
def test_tls_with_client_certificate_and_password(
    tmp_path: Path, broker_factory: Callable[..., Broker], publishers, caplog: pytest.LogCaptureFixture
) -> None:
    pki = make_pki(tmp_path)
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "pi", "s3cret"], check=True)
    broker = broker_factory(
        listener=f"allow_anonymous false\npassword_file {passwords}\ncafile {pki['ca.crt']}\n"
        f"certfile {pki['server.crt']}\nkeyfile {pki['server.key']}\nrequire_certificate true\n"
    ).start()
    tls = {"tls_ca": str(pki["ca.crt"]), "tls_cert": str(pki["client.crt"]), "tls_key": str(pki["client.key"])}

    good = publishers(make_config(tmp_path, broker.port, username="pi", password="s3cret", **tls))
    echoed: list[bytes] = []
    good.subscribe(TOPICS.availability, lambda _topic, payload, _retained: echoed.append(payload))
    good.start()
    wait_until(lambda: b"online" in echoed, 15, "the TLS client's own retained 'online' back from the broker")

    wrong = publishers(make_config(tmp_path, broker.port, username="pi", password="wrong", **tls))
    wrong.start()
    refused = lambda: [r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage()]  # noqa: E731
    wait_until(lambda: bool(refused()), 15, "the broker to refuse a wrong password")
    assert refused() == [f"MQTT: broker 127.0.0.1:{broker.port} refused the connection: Not authorized"]
    assert not wrong.connected


def test_events_unacknowledged_at_stop_stay_in_the_outbox_and_go_first_after_the_next_start(
    tmp_path: Path, broker_factory: Callable[..., Broker], subscribe: Callable[..., Subscriber], caplog
) -> None:
    broker = broker_factory()  # not started: the broker is away for the whole first run
    journal = tmp_path / "state" / "outbox.db"
    config = make_config(tmp_path, broker.port)
    first = MqttPublisher(config.mqtt, TOPICS.availability, journal)
    first.start()
    for n in range(3):
        first.publish(TOPICS.events, json.dumps({"n": n}))
    first.publish(TOPICS.state, "stale", retain=True)
    first.stop(timeout=0.3)
    with sqlite3.connect(journal) as db:
        assert [row[0] for row in db.execute("SELECT topic FROM outbox ORDER BY id")] == [TOPICS.events] * 3
    assert f"3 events not acknowledged by the broker at stop; kept in {journal} for the next start" in caplog.text

    broker.start()
    sub = subscribe(broker.port, [TOPICS.events, TOPICS.state])
    second = MqttPublisher(config.mqtt, TOPICS.availability, journal)
    second.publish(TOPICS.events, json.dumps({"n": 3}))  # made by the new run before it connects
    second.start()
    wait_until(lambda: len(sub.on(TOPICS.events)) == 4, 15, "the 3 journaled events and the new one")
    assert [json.loads(m.payload)["n"] for m in sub.on(TOPICS.events)] == [0, 1, 2, 3]
    assert sub.on(TOPICS.state) == [], "retained values are not journaled: the next run publishes the present"
    wait_until(lambda: second.queue_depth == 0, 5, "the acknowledgements")
    second.stop()
    with sqlite3.connect(journal) as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,), "acknowledged events leave the journal"


def test_outbox_defaults_to_systemds_state_directory(tmp_path: Path) -> None:
    config = make_config(tmp_path, 1883)
    assert outbox_path(config.mqtt, {"STATE_DIRECTORY": "/var/lib/emotion-edge"}) == Path(
        "/var/lib/emotion-edge/outbox.db"
    )
    assert outbox_path(config.mqtt, {}) is None
    config.mqtt.outbox = str(tmp_path / "q.db")
    assert outbox_path(config.mqtt, {"STATE_DIRECTORY": "/var/lib/x"}) == tmp_path / "q.db"


def test_an_unreadable_outbox_is_kept_aside_and_a_new_one_holds_the_events(
    tmp_path: Path, broker_factory: Callable[..., Broker], caplog
) -> None:
    broker = broker_factory()  # not started: what is published must wait in the new journal
    journal = tmp_path / "outbox.db"
    journal.write_text("not a database\n" * 100)
    pub = MqttPublisher(make_config(tmp_path, broker.port).mqtt, TOPICS.availability, journal)
    pub.start()
    pub.publish(TOPICS.events, json.dumps({"n": 0}))
    pub.stop(timeout=0.3)
    (aside,) = tmp_path.glob("outbox.db.unreadable-*")
    assert aside.read_text() == "not a database\n" * 100, "the old file is kept as it was, for recovery"
    assert f"MQTT outbox {journal}: unreadable (file is not a database); moved to {aside.name}" in caplog.text
    assert f"1 events not acknowledged by the broker at stop; kept in {journal} for the next start" in caplog.text
    with sqlite3.connect(journal) as db:
        assert [row[0] for row in db.execute("SELECT payload FROM outbox")] == ['{"n": 0}']


def test_events_that_could_not_be_journaled_are_reported_lost_at_stop(
    tmp_path: Path, broker_factory: Callable[..., Broker], caplog
) -> None:
    broker = broker_factory()  # not started
    (tmp_path / "state").write_text("a file where the state folder should be")
    journal = tmp_path / "state" / "outbox.db"
    pub = MqttPublisher(make_config(tmp_path, broker.port).mqtt, TOPICS.availability, journal)
    pub.start()
    pub.publish(TOPICS.events, json.dumps({"n": 0}))
    pub.stop(timeout=0.3)
    assert f"MQTT outbox {journal}: cannot open (" in caplog.text
    assert f"1 events not acknowledged by the broker at stop; lost ({journal} could not be written)" in caplog.text


def test_link_retries_double_from_half_a_second_to_the_cap_with_jitter_and_start_again_after_a_connection(
    tmp_path: Path,
) -> None:
    """Each delay is drawn from the upper half of 0.5, 1, 2, 4 s, then of mqtt.reconnect_max: never longer
    than the cap, never all devices in step; a connection starts the schedule again."""
    config = make_config(tmp_path, 1883, reconnect_max=5.0).mqtt
    ceilings = [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    firsts = set()
    for _ in range(20):
        link = Link(config)
        delays = [link.next_delay() for _ in ceilings]
        assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings)), delays
        firsts.add(delays[0])
        link.connected()
        assert 0.25 <= link.next_delay() <= 0.5, "after a connection the next outage retries soon again"
    assert len(firsts) > 1, "jittered"


def test_link_says_one_line_per_outage_however_many_attempts_fail(tmp_path: Path, caplog) -> None:
    config = make_config(tmp_path, 1883).mqtt
    link = Link(config, meanwhile=", events kept in the outbox")
    link.lost("keepalive timeout")
    link.unreachable("Connection refused")  # the attempts while the broker is away
    link.unreachable("Connection refused")
    assert link.connected().startswith(" after ")
    link.unreachable("Connection refused")  # a new outage, its own line
    link.unreachable("Connection refused")
    assert [r.getMessage() for r in caplog.records] == [
        "MQTT: connection to the broker lost (keepalive timeout); reconnecting, events kept in the outbox",
        "MQTT: broker 127.0.0.1:1883 unreachable (Connection refused); retrying every 5 s at most, events kept in "
        "the outbox",
    ]
