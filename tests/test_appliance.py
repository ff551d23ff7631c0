"""The Pi as a home appliance, end to end with real services and a real mosquitto: two untouched Pis
do not collide, the pause switch releases the camera and survives a restart, forget leaves nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import (
    Broker,
    ServiceProcess,
    Subscriber,
    edge_command,
    free_port,
    port_open,
    refusing_subscriptions,
    wait_until,
)

from edge.config import load
from edge.mqtt import discovery
from edge.mqtt.commands import EnabledSwitch
from edge.mqtt.payloads import Topics
from edge.mqtt.publisher import MqttPublisher
from edge.tools.demo import DEMO_CLIP

PREFIX = "emotion-edge"


@pytest.fixture
def run_service(edge_env: dict[str, str]) -> Iterator[Callable[..., ServiceProcess]]:
    """``run_service(port, *flags, env=…, hostname=…)``: the service as a subprocess, killed at teardown;
    with ``hostname`` it runs in its own UTS namespace under that name (root only)."""
    started: list[ServiceProcess] = []

    def start(port: int, *args: str, env: dict[str, str] | None = None, hostname: str | None = None) -> ServiceProcess:
        flags = ["--mqtt-host", "127.0.0.1", "--mqtt-port", str(port), *args]
        wrap: list[str] = []
        if hostname is not None:
            if os.geteuid() != 0 or not shutil.which("unshare"):
                pytest.skip("needs root and unshare for a hostname of its own")
            wrap = ["unshare", "--uts", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh"]
        started.append(ServiceProcess(flags, {**edge_env, **(env or {})}, wrap=wrap))
        return started[-1]

    yield start
    for s in started:
        s.kill()


def machine_id_file(tmp_path: Path, name: str, digits: str) -> dict[str, str]:
    path = tmp_path / name
    path.write_text(digits * (32 // len(digits)) + "\n")
    return {"EMOTION_EDGE_MACHINE_ID_FILE": str(path)}


def test_two_untouched_pis_publish_on_different_topics_and_unique_ids(
    tmp_path: Path, broker: Broker, subscribe: Callable[..., Subscriber], run_service
) -> None:
    """Both called raspberrypi, as every Raspberry Pi OS image is; only their machine ids differ."""
    sub = subscribe(broker.port, [f"{PREFIX}/#", "homeassistant/#"])
    for name, digits in (("one", "0123456789abcdef"), ("two", "fedcba9876543210")):
        env = machine_id_file(tmp_path, name, digits)
        run = run_service(
            broker.port, "--source", str(DEMO_CLIP), "--max-frames", "20", env=env, hostname="raspberrypi"
        )
        assert run.wait() == 0, run.log
    devices = {m.topic.split("/")[1] for m in sub.messages if m.topic.startswith(PREFIX)}
    assert len(devices) == 2 and all(d.startswith("raspberrypi-") for d in devices), devices
    discoveries = [json.loads(m.payload) for m in sub.messages if m.topic.startswith("homeassistant/device/")]
    assert len({d["device"]["identifiers"][0] for d in discoveries}) == 2
    one, two = ({c["unique_id"] for c in d["components"].values()} for d in discoveries)
    assert len(one) == len(two) == 11 and not one & two
    assert {d["device"]["name"] for d in discoveries} == devices


def test_renaming_the_device_keeps_its_home_assistant_ids(
    tmp_path: Path, broker: Broker, subscribe: Callable[..., Subscriber], run_service
) -> None:
    sub = subscribe(broker.port, ["homeassistant/#"])
    env = machine_id_file(tmp_path, "id", "0123456789abcdef")
    for device in ("kitchen", "hallway"):
        run = run_service(broker.port, "--source", str(DEMO_CLIP), "--max-frames", "5", "--device-id", device, env=env)
        assert run.wait() == 0, run.log
    bodies = [(m.topic, json.loads(m.payload)) for m in sub.messages if m.topic.startswith("homeassistant/device/")]
    assert len({topic for topic, _ in bodies}) == 1, "one discovery topic, updated in place"
    assert [b["device"]["name"] for _, b in bodies] == ["kitchen", "hallway"]
    assert bodies[0][1]["components"]["emotion"]["unique_id"] == bodies[1][1]["components"]["emotion"]["unique_id"]
    assert bodies[1][1]["components"]["emotion"]["state_topic"] == f"{PREFIX}/hallway/state"


def send(sub: Subscriber, topic: str, payload: str) -> None:
    sub.client.publish(topic, payload, qos=1).wait_for_publish(5)


def bodies(sub: Subscriber, topic: str) -> list[dict]:
    return [json.loads(m.payload) for m in sub.on(topic)]


def test_the_switch_pauses_and_resumes_a_running_service_and_the_state_survives_a_restart(
    tmp_path: Path, broker: Broker, subscribe: Callable[..., Subscriber], run_service
) -> None:
    base = f"{PREFIX}/testpi"
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    env = {"STATE_DIRECTORY": str(state_dir), "EMOTION_EDGE_MQTT_STATS_INTERVAL": "1"}
    flags = ("--source", str(DEMO_CLIP), "--loop", "--device-id", "testpi")
    sub = subscribe(broker.port, [f"{base}/#"])
    run = run_service(broker.port, *flags, env=env)
    run.wait_for_log("ready in")
    sub.wait_for(f"{base}/enabled", lambda m: m.text == "ON")
    sub.wait_for(f"{base}/events", lambda m: json.loads(m.payload)["type"] == "start")

    # Bad payloads: ignored, and said once, not once per message.
    for payload in ("maybe", "maybe", "rm -rf /", "\x1b[2J"):
        send(sub, f"{base}/enabled/set", payload)
    send(sub, f"{base}/enabled/set", "OFF")
    sub.wait_for(f"{base}/enabled", lambda m: m.text == "OFF" and m.retain is False)
    paused = sub.wait_for(f"{base}/state", lambda m: json.loads(m.payload)["paused"])
    assert json.loads(paused.payload)["faces"] == 0
    run.wait_for_log("paused: camera released")
    assert run.log.count("ignoring") == 1, run.log
    live = {e["track"] for e in map(json.loads, (m.payload for m in sub.on(f"{base}/events")))}
    ended = {e["track"] for e in map(json.loads, (m.payload for m in sub.on(f"{base}/events"))) if e["type"] == "end"}
    assert live == ended, "pausing ends every live track"
    assert (state_dir / "enabled").read_text().strip() == "OFF"
    events_while_paused = len(sub.on(f"{base}/events"))
    time.sleep(1.5)  # a second and a half of a 15 fps clip: nothing may be read, so nothing happens
    assert len(sub.on(f"{base}/events")) == events_while_paused

    # Stats report their own period: one that began after the pause counts no frame.
    def paused_stats() -> list[dict]:
        return [s for s in bodies(sub, f"{base}/stats") if s["source_state"] == "paused"]

    wait_until(lambda: len(paused_stats()) >= 2, 10, "two stats messages while paused")
    assert (paused_stats()[1]["fps"], paused_stats()[1]["stages_ms"]) == (0, {}), paused_stats()[1]

    run.process.send_signal(signal.SIGTERM)
    assert run.wait() == 0, run.log
    again = run_service(broker.port, *flags, env=env)
    again.wait_for_log("paused (the camera stays closed")
    late = subscribe(broker.port, [f"{base}/enabled", f"{base}/state"])
    assert late.wait_for(f"{base}/enabled").text == "OFF"
    late.wait_for(f"{base}/state", lambda m: json.loads(m.payload)["paused"])
    time.sleep(1.0)
    assert len(sub.on(f"{base}/events")) == events_while_paused, "a service started paused reads no frame"

    states_before = len(sub.on(f"{base}/state"))
    send(sub, f"{base}/enabled/set", "on")  # any case
    sub.wait_for(f"{base}/enabled", lambda m: m.text == "ON" and not m.retain)

    # The state says so at once, not only once a face is seen (or at the next heartbeat).
    def unpaused() -> list[dict]:
        return [s for s in bodies(sub, f"{base}/state")[states_before:] if not s["paused"]]

    wait_until(lambda: bool(unpaused()), 10, "a state that is not paused")
    assert unpaused()[0]["faces"] == 0, "the first state after resuming is sent before any frame is read"
    again.wait_for_log("resumed: watching")
    wait_until(lambda: len(sub.on(f"{base}/events")) > events_while_paused, 20, "events after resuming")
    assert (state_dir / "enabled").read_text().strip() == "ON"


def test_each_run_of_bad_commands_is_said_once_and_a_bad_one_leaves_the_wanted_value(
    tmp_path: Path, broker: Broker, subscribe: Callable[..., Subscriber], caplog
) -> None:
    """One line per misconfigured sender, not one per message; but a sender that sent a good command in
    between has made a new mistake, worth a line of its own."""
    empty = tmp_path / "config.toml"
    empty.write_text("")
    config = load(
        empty, env={}, overrides={"mqtt.port": broker.port, "mqtt.host": "127.0.0.1", "mqtt.device_id": "testpi"}
    )
    topics = Topics.of(PREFIX, "testpi")
    pub = MqttPublisher(config.mqtt, topics.availability)
    switch = EnabledSwitch(pub, topics, tmp_path / "enabled")
    switch.attach()
    sub = subscribe(broker.port, [topics.enabled])
    pub.start()
    try:
        sub.wait_for(topics.enabled, lambda m: m.text == "ON")  # the broker has the switch's subscription by now
        for payload in ("maybe", "maybe", "OFF", "nope", "nope"):
            send(sub, topics.enabled_set, payload)
        ignoring = lambda: [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]  # noqa: E731
        wait_until(lambda: len(ignoring()) >= 2, 10, "the second run of bad commands said")
        time.sleep(0.3)  # the last "nope" has arrived too
        assert ignoring() == [f"{topics.enabled_set}: ignoring b'maybe' (expected ON or OFF)",
                              f"{topics.enabled_set}: ignoring b'nope' (expected ON or OFF)"]  # fmt: skip
        assert switch.take() is False and switch.take() is None, "OFF is wanted, once"
    finally:
        pub.stop()


def test_a_retained_command_is_no_command_and_a_torn_state_file_starts_the_device_paused(
    tmp_path: Path, broker: Broker, subscribe: Callable[..., Subscriber], caplog
) -> None:
    """A retained ON left on the command topic would reopen a paused camera at every reconnection; a pause
    state file a power cut tore open must not resume a camera its household had paused."""
    empty = tmp_path / "config.toml"
    empty.write_text("")
    config = load(
        empty, env={}, overrides={"mqtt.port": broker.port, "mqtt.host": "127.0.0.1", "mqtt.device_id": "testpi"}
    )
    topics = Topics.of(PREFIX, "testpi")
    sub = subscribe(broker.port, [topics.enabled])
    sub.client.publish(topics.enabled_set, "ON", qos=1, retain=True).wait_for_publish(5)
    state = tmp_path / "enabled"
    state.write_text("")  # renamed into place before its content reached the card
    pub = MqttPublisher(config.mqtt, topics.availability)
    switch = EnabledSwitch(pub, topics, state)
    switch.attach()
    pub.start()
    try:
        assert switch.enabled is False
        sub.wait_for(topics.enabled, lambda m: m.text == "OFF")

        def retained() -> list[str]:
            return [r.getMessage() for r in caplog.records if "ignoring a retained" in r.getMessage()]

        wait_until(lambda: bool(retained()), 10, "the retained ON said")
        assert retained() == [f"{topics.enabled_set}: ignoring a retained b'ON': commands are not retained (clear it "
                              f"with mosquitto_pub -r -n -t {topics.enabled_set})"]  # fmt: skip
        assert switch.take() is None, "the retained ON asks nothing"
        sub.client.publish(topics.enabled_set, "", qos=1, retain=True).wait_for_publish(5)  # cleared: says nothing
        send(sub, topics.enabled_set, "on")
        wait_until(lambda: switch._wanted is not None, 10, "the ON sent now")
        assert switch.take() is True
        switch.applied(True)
        assert state.read_text() == "ON\n"
        assert not [r for r in caplog.records if "ignoring b''" in r.getMessage()]
    finally:
        pub.stop()
    assert [r.getMessage() for r in caplog.records if "enabled:" in r.getMessage() and r.levelname == "ERROR"] == [
        f"{state}: unexpected content '', staying paused until ON"
    ]


def test_a_command_topic_the_broker_will_not_let_it_read_is_one_error_naming_it_across_reconnections(
    tmp_path: Path, broker_factory: Callable[..., Broker], subscribe: Callable[..., Subscriber], caplog
) -> None:
    """A broker ACL written for the old topics (or a typo in it) refuses the switch's subscription: the
    Detection switch would do nothing, without a word. It is said once, naming the topic, not at every
    reconnection, and the device goes on publishing."""
    topics = Topics.of(PREFIX, "testpi")
    allowed = ["homeassistant/status", topics.enabled]  # not topics.enabled_set
    broker = broker_factory(listener=refusing_subscriptions(tmp_path, allowed)).start()
    sub = subscribe(broker.port, [topics.enabled])
    empty = tmp_path / "config.toml"
    empty.write_text("")
    config = load(
        empty, env={}, overrides={"mqtt.port": broker.port, "mqtt.host": "127.0.0.1", "mqtt.device_id": "testpi"}
    )
    pub = MqttPublisher(config.mqtt, topics.availability)
    EnabledSwitch(pub, topics, None).attach()  # subscribes first, so its answer comes first
    heard: list[bytes] = []
    pub.subscribe("homeassistant/status", lambda _topic, payload, _retained: heard.append(payload))
    refused = lambda: [r for r in caplog.records if "refused the subscription" in r.getMessage()]  # noqa: E731
    pub.start()
    try:
        wait_until(lambda: bool(refused()), 10, "the refusal said")
        assert [(r.levelname, r.getMessage()) for r in refused()] == [
            (
                "ERROR",
                f"MQTT: broker 127.0.0.1:{broker.port} refused the subscription to {topics.enabled_set}"
                " (Unspecified error); messages there do not reach the service",
            )
        ]  # MQTT 3.1.1 gives no reason
        sub.wait_for(topics.enabled, lambda m: m.text == "ON")
        broker.stop()
        wait_until(lambda: not pub.connected, 10, "the connection lost")
        broker.start()
        wait_until(lambda: pub.reconnects == 1, 15, "connected again")

        def births_heard() -> bool:  # once one is, the broker has answered the switch's subscription again
            sub.client.publish("homeassistant/status", "online")
            return bool(heard)

        wait_until(births_heard, 10, "a birth message heard on the new connection")
        assert len(refused()) == 1, "said once, not at every reconnection"
    finally:
        pub.stop()


def test_forget_leaves_no_retained_topic_of_the_device(
    tmp_path: Path, broker: Broker, subscribe: Callable[..., Subscriber], run_service, edge_env: dict[str, str]
) -> None:
    base = f"{PREFIX}/testpi"
    run = run_service(broker.port, "--source", str(DEMO_CLIP), "--max-frames", "30", "--device-id", "testpi")
    assert run.wait() == 0, run.log
    before = subscribe(broker.port, ["#"])
    wait_until(lambda: any(m.topic.startswith("homeassistant/device/") for m in before.messages), 10, "discovery")
    assert {f"{base}/availability", f"{base}/state", f"{base}/stats", f"{base}/enabled"} <= {
        m.topic for m in before.messages if m.retain
    }
    config = tmp_path / "forget.toml"
    config.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ndevice_id = "testpi"\n')
    done = subprocess.run(edge_command("forget", "--config", str(config)), env=edge_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    held = {m.topic for m in before.messages if m.retain and m.payload}
    assert f"cleared {len(held)} retained topics of testpi" in done.stderr  # what was there, no more
    after = subscribe(broker.port, ["#"])
    time.sleep(1.0)  # a fresh subscriber receives every retained message at once
    assert [m.topic for m in after.messages if m.retain] == []


def test_forget_clears_what_an_acl_lets_it_write_but_not_read_back(
    tmp_path: Path, broker_factory: Callable[..., Broker], subscribe: Callable[..., Subscriber],
    edge_env: dict[str, str],
) -> None:  # fmt: skip
    """watch.md's ACL lets a device write its topics and its discovery but read only its command topic: forget,
    run as the device, sees nothing retained and must clear them all the same, or the Pi stays in Home
    Assistant. The broker's second listener, without an ACL, seeds and checks."""
    acl = tmp_path / "acl"
    acl.write_text("topic write #\n")  # anonymous clients of the first listener: write only
    open_port = free_port()
    broker = broker_factory(
        listener=f"allow_anonymous true\nacl_file {acl}\nlistener {open_port} 127.0.0.1\nallow_anonymous true"
    ).start()
    wait_until(lambda: port_open(open_port), 10, "the open listener")
    config = tmp_path / "forget.toml"
    config.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ndevice_id = "testpi"\n')
    cfg = load(config, env={})
    held = [discovery.discovery_topic(cfg), discovery.legacy_topics(cfg)[0], f"{PREFIX}/testpi/state",
            f"{PREFIX}/testpi/availability"]  # fmt: skip
    seeder = subscribe(open_port, ["unused"])
    for topic in held:
        seeder.client.publish(topic, "x", qos=1, retain=True).wait_for_publish(5)
    done = subprocess.run(edge_command("forget", "--config", str(config)), env=edge_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "cleared 0 retained topics of testpi" in done.stderr, done.stderr  # it could see none
    after = subscribe(open_port, ["#"])
    time.sleep(1.0)  # a fresh subscriber receives every retained message at once
    assert [m.topic for m in after.messages if m.retain] == []


def test_forget_says_when_the_broker_refuses_to_let_it_look_and_clears_what_it_knows(
    tmp_path: Path, broker_factory: Callable[..., Broker], edge_env: dict[str, str]
) -> None:
    broker = broker_factory(listener=refusing_subscriptions(tmp_path, ["homeassistant/status"])).start()
    config = tmp_path / "forget.toml"
    config.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ndevice_id = "testpi"\n')
    done = subprocess.run(edge_command("forget", "--config", str(config)), env=edge_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    [warning] = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert f"broker 127.0.0.1:{broker.port} refused the subscription to {PREFIX}/testpi/# (" in warning, warning
    assert "cleared 0 retained topics of testpi" in done.stderr, done.stderr


def test_forget_without_a_broker_says_so_in_one_line(tmp_path: Path, edge_env: dict[str, str]) -> None:
    config = tmp_path / "forget.toml"
    config.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {free_port()}\ndevice_id = "testpi"\n')
    done = subprocess.run(edge_command("forget", "--config", str(config)), env=edge_env, capture_output=True, text=True)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the broker 127.0.0.1" in lines[0], done.stderr
