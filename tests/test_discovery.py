"""Home Assistant discovery and the device's identity: the payload checked field by field against the
committed copy of Home Assistant's documented schema, its templates rendered with Jinja2 as Home
Assistant renders them, and its publishing and clearing against a real mosquitto."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, Broker, Subscriber, wait_until
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edge import identity
from edge.config import Config, load
from edge.mqtt import discovery
from edge.mqtt.payloads import Topics
from edge.mqtt.publisher import MqttPublisher
from edge.vision.emotions import EMOTIONS

SCHEMA = json.loads((REPO / "tests" / "fixtures" / "ha_mqtt_device_discovery.json").read_text())
TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "template": str, "integer": int, "boolean": bool, "list": list, "map": dict,
}  # fmt: skip
KEY = "0123456789ab"
TOPICS = Topics.of("emotion-edge", "testpi")


def make_config(tmp_path: Path, **overrides: object) -> Config:
    empty = tmp_path / "config.toml"
    empty.write_text("")
    return load(empty, env={}, overrides={"mqtt.device_id": "testpi", "mqtt.host": "127.0.0.1", **overrides})


def expand(body: dict[str, Any], abbreviations: dict[str, str]) -> dict[str, Any]:
    return {abbreviations.get(key, key): value for key, value in body.items()}


def check(where: str, body: dict[str, Any], fields: dict[str, str], required: list[str]) -> None:
    """Every key documented with its type, every required key present."""
    for key in required:
        assert key in body, f"{where}: required {key} missing"
    for key, value in body.items():
        assert key in fields, f"{where}.{key}: not a documented field"
        kinds = fields[key].split("|")
        ok = any(isinstance(value, TYPES[k]) and not (k == "integer" and isinstance(value, bool)) for k in kinds)
        assert ok, f"{where}.{key}: expected {fields[key]}, got {value!r}"


def validate(topic: str, payload: str) -> dict[str, Any]:
    """Check a device discovery message against the documented schema; returns the expanded body."""
    _prefix, kind, object_id, leaf = topic.split("/")
    assert (kind, leaf) == ("device", "config")
    assert re.match(SCHEMA["topic"]["object_id_charset"], object_id), object_id
    body = expand(json.loads(payload), SCHEMA["abbreviations"])
    check("root", body, SCHEMA["root"]["fields"], SCHEMA["root"]["required"])
    device = expand(body["device"], SCHEMA["device_abbreviations"])
    check("device", device, SCHEMA["device"]["fields"], [])
    assert any(k in device for k in SCHEMA["device"]["required_one_of"])
    if "configuration_url" in device:
        assert device["configuration_url"].startswith(tuple(SCHEMA["device"]["configuration_url_schemes"]))
    check("origin", expand(body["origin"], SCHEMA["origin_abbreviations"]), SCHEMA["origin"]["fields"], ["name"])
    for item in body.get("availability", []):
        item = expand(item, SCHEMA["abbreviations"])
        check("availability", item, SCHEMA["availability_item"]["fields"], SCHEMA["availability_item"]["required"])
    for name, raw in body["components"].items():
        component = expand(raw, SCHEMA["abbreviations"])
        where = f"components.{name}"
        for key in SCHEMA["component"]["required"]:
            assert key in component, f"{where}: required {key} missing"
        platform = SCHEMA["platforms"][component["platform"]]
        check(where, component, platform["fields"], platform["required"])
        if "entity_category" in component:
            allowed = platform.get("rules", {}).get("entity_category_allowed", SCHEMA["entity_category"])
            assert component["entity_category"] in allowed, where
        if component["platform"] == "sensor":
            rules = platform["rules"]
            if "options" in component:
                assert component["options"] and component.get("device_class") == rules["options_need_device_class"]
                assert not set(rules["options_exclude"]) & set(component), f"{where}: options with a unit or class"
            if "state_class" in component:
                assert component["state_class"] in platform["state_classes"], where
            units = platform["units_of_device_classes_used"].get(component.get("device_class"))
            if units is not None:
                assert component.get("unit_of_measurement") in units, where
        if component["platform"] == "binary_sensor" and "device_class" in component:
            assert component["device_class"] in platform["device_classes_used"], where
    return body


# Home Assistant renders value templates with Jinja2 in a sandbox, with the message as value_json.
JINJA = ImmutableSandboxedEnvironment()


def render(template: str, message: dict[str, Any]) -> str:
    return JINJA.from_string(template).render(value_json=message, value=json.dumps(message))


@pytest.fixture
def body(tmp_path: Path) -> dict[str, Any]:
    topic, payload = discovery.message(make_config(tmp_path), EMOTIONS, KEY)
    assert topic == f"homeassistant/device/emotion_edge_{KEY}/config"
    return validate(topic, payload)


def test_discovery_payload_matches_the_documented_device_schema(body: dict[str, Any]) -> None:
    components = body["components"]
    assert set(components) == {
        "emotion", "faces", "confidence", "occupancy", "face_event", "detection",
        "fps", "cpu_temperature", "events_dropped", "uptime", "camera",
    }  # fmt: skip
    assert body["device"]["identifiers"] == [f"emotion_edge_{KEY}"] and body["device"]["name"] == "testpi"
    assert body["origin"]["name"] == "emotion-edge" and body["origin"]["sw_version"]
    assert body["availability"] == [{"topic": TOPICS.availability, "payload_available": "online",
                                     "payload_not_available": "offline"}]  # fmt: skip
    assert "configuration_url" not in body["device"], "no page to link to while the preview is off"
    unique_ids = [c["unique_id"] for c in components.values()]
    assert len(set(unique_ids)) == len(unique_ids) and all(u.startswith(f"emotion_edge_{KEY}_") for u in unique_ids)
    assert components["emotion"]["options"] == [*EMOTIONS, "none"]
    assert components["emotion"]["json_attributes_topic"] == TOPICS.scores
    assert components["detection"]["command_topic"] == f"{TOPICS.base}/enabled/set"
    assert components["detection"]["state_topic"] == f"{TOPICS.base}/enabled"
    assert components["face_event"]["state_topic"] == TOPICS.events
    assert components["camera"]["state_topic"] == f"{TOPICS.base}/camera"
    diagnostic = {n for n, c in components.items() if c.get("entity_category") == "diagnostic"}
    assert diagnostic == {"fps", "cpu_temperature", "events_dropped", "uptime", "camera"}


def test_schema_check_catches_what_home_assistant_would_reject(body: dict[str, Any], tmp_path: Path) -> None:
    """The control for the test above: the validator fails on real mistakes."""
    topic, payload = discovery.message(make_config(tmp_path), EMOTIONS, KEY)
    for breakage in (
        lambda b: b["components"]["emotion"].update(unit_of_measurement="%"),  # options with a unit
        lambda b: b["components"]["face_event"].pop("event_types"),
        lambda b: b["components"]["faces"].update(stat_topic="x"),  # a typo
        lambda b: b.pop("origin"),
        lambda b: b["components"]["detection"].pop("unique_id"),
    ):
        broken = json.loads(payload)
        breakage(broken)
        with pytest.raises(AssertionError):
            validate(topic, json.dumps(broken))


STATE = {"schema": 1, "device": "testpi", "faces": 2, "emotion": "happy", "confidence": 0.8504, "paused": False}


def test_templates_give_the_states_home_assistant_should_show(body: dict[str, Any]) -> None:
    c = body["components"]
    empty = {**STATE, "faces": 0, "emotion": "none", "confidence": 0.0}
    paused = {**empty, "paused": True}
    assert [render(c["emotion"]["value_template"], m) for m in (STATE, empty, paused)] == ["happy", "none", "None"]
    assert [render(c["faces"]["value_template"], m) for m in (STATE, empty, paused)] == ["2", "0", "None"]
    # Home Assistant's round(0) gives 85; Jinja2's own, used here, 85.0: both numbers.
    assert [render(c["confidence"]["value_template"], m) for m in (STATE, empty, paused)] == ["85.0", "None", "None"]
    assert [render(c["occupancy"]["value_template"], m) for m in (STATE, empty, paused)] == ["ON", "OFF", "None"]
    scores = {"schema": 1, "scores": dict.fromkeys(EMOTIONS, 0.1)}
    assert json.loads(render(c["emotion"]["json_attributes_template"], scores)) == scores["scores"]
    change = {
        "type": "change",
        "track": 3,
        "emotion": "sad",
        "previous": "happy",
        "confidence": 0.4,
        "box": [1, 2, 3, 4],
    }
    event = json.loads(render(c["face_event"]["value_template"], change))
    assert event == {"event_type": "change", "emotion": "sad", "previous": "happy", "track": 3, "confidence": 0.4}
    assert event["event_type"] in c["face_event"]["event_types"]
    start = json.loads(render(c["face_event"]["value_template"], {**change, "type": "start", "previous": None}))
    assert start["event_type"] == "start" and start["previous"] is None
    del change["previous"]
    assert json.loads(render(c["face_event"]["value_template"], change))["previous"] is None
    stats = {"fps": 12.5, "cpu_temperature": None, "events_dropped": 0, "uptime": 61.4}
    assert render(c["cpu_temperature"]["value_template"], stats) == "None", "no thermal zone: unknown"
    assert render(c["cpu_temperature"]["value_template"], {**stats, "cpu_temperature": 48.3}) == "48.3"
    assert render(c["uptime"]["value_template"], stats) == "61.0"


@pytest.mark.parametrize(
    ("bind", "url"),
    [
        ("127.0.0.1", "http://localhost:8090/"),
        ("::1", "http://localhost:8090/"),
        ("192.168.1.20", "http://192.168.1.20:8090/"),
        ("fd00::20", "http://[fd00::20]:8090/"),
        ("0.0.0.0", "http://{host}.local:8090/"),  # every interface: the name mDNS answers to
        ("::", "http://{host}.local:8090/"),
    ],
)
def test_configuration_url_is_the_live_view_when_it_is_on(tmp_path: Path, bind: str, url: str) -> None:
    config = make_config(tmp_path, **{"preview.enabled": True, "preview.bind": bind})
    body = validate(*discovery.message(config, EMOTIONS, KEY))
    assert body["device"]["configuration_url"] == url.format(host=identity.short_hostname())


def test_device_id_gets_a_machine_suffix_only_for_a_stock_hostname(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_text("0123456789abcdef0123456789abcdef\n")
    two.write_text("fedcba9876543210fedcba9876543210\n")
    env_one, env_two = {identity.MACHINE_ID_ENV: str(one)}, {identity.MACHINE_ID_ENV: str(two)}
    a, b = identity.default_device_id("raspberrypi", env_one), identity.default_device_id("raspberrypi", env_two)
    assert a.startswith("raspberrypi-") and b.startswith("raspberrypi-") and a != b
    assert a == identity.default_device_id("raspberrypi.local", env_one), "stable for one machine"
    assert identity.default_device_id("localhost", env_one).startswith("localhost-")
    assert identity.default_device_id("RaspberryPi", env_one) == f"RaspberryPi-{a[-6:]}", "in any case"
    assert identity.default_device_id("kitchen-pi", env_one) == "kitchen-pi", "a chosen name stays as it is"
    assert identity.default_device_id("Living Room", env_one) == "Living-Room"
    assert identity.machine_key(env_one) != identity.machine_key(env_two)
    assert "0123456789abcdef" not in a + identity.machine_key(env_one), "the machine id itself is never shown"


def test_without_a_machine_id_the_hostname_keys_the_device(tmp_path: Path, caplog) -> None:
    env = {identity.MACHINE_ID_ENV: str(tmp_path / "missing")}
    assert identity.machine_key(env, "raspberrypi") == identity.machine_key(env, "raspberrypi")
    assert identity.machine_key(env, "raspberrypi") != identity.machine_key(env, "kitchen")
    assert "no machine id" in caplog.text


@pytest.fixture
def publishers() -> Iterator[Callable[[Config], MqttPublisher]]:
    made: list[MqttPublisher] = []

    def make(config: Config) -> MqttPublisher:
        made.append(MqttPublisher(config.mqtt, Topics.of(config.mqtt.topic_prefix, config.mqtt.device_id).availability))
        return made[-1]

    yield make
    for p in made:
        p.stop(timeout=1)


def test_an_upgrade_from_a_stock_hostname_clears_the_old_sensors_of_the_id_it_had(tmp_path: Path, monkeypatch) -> None:
    """Before 0.2.0 a stock hostname was the device id as it is; now it has a suffix, and the old
    per-entity topics were published under the id without it."""
    machine = tmp_path / "machine-id"
    machine.write_text("0123456789abcdef0123456789abcdef\n")
    monkeypatch.setenv(identity.MACHINE_ID_ENV, str(machine))

    def old_sensors(device: str) -> list[str]:
        return [f"homeassistant/sensor/emotion_edge_{device}/{name}/config" for name in discovery.LEGACY_OBJECTS]

    stock = identity.default_device_id("raspberrypi")
    assert stock.startswith("raspberrypi-") and identity.legacy_device_id("raspberrypi.local") == "raspberrypi"
    default = make_config(tmp_path, **{"mqtt.device_id": stock})
    assert discovery.legacy_topics(default, "raspberrypi") == old_sensors(stock) + old_sensors("raspberrypi")
    chosen = make_config(tmp_path, **{"mqtt.device_id": "kitchen-pi"})  # set by hand: it was the id then too
    assert discovery.legacy_topics(chosen, "raspberrypi") == old_sensors("kitchen-pi")
    assert discovery.legacy_topics(chosen, "kitchen-pi") == old_sensors("kitchen-pi"), "a chosen hostname never changed"
    assert identity.legacy_device_id("_lab.local") == "pi-_lab"


def retained(port: int, subscribe: Callable[..., Subscriber], topic_filter: str) -> dict[str, str]:
    """What the broker retains under a filter: a fresh subscriber gets it at once."""
    sub = subscribe(port, [topic_filter])
    time.sleep(0.5)  # retained messages follow the subscription at once; nothing else is published here
    return {m.topic: m.text for m in sub.messages if m.retain}


def test_one_retained_message_replaces_the_old_per_entity_ones_and_is_resent_on_birth(
    tmp_path: Path, broker: Broker, subscribe: Callable[..., Subscriber], publishers
) -> None:
    config = make_config(tmp_path, **{"mqtt.port": broker.port, "homeassistant.birth_delay": 0.5})
    seeder = subscribe(broker.port, ["unused"])
    legacy = discovery.legacy_topics(config)
    for topic in legacy:  # what an upgrader's broker still holds from the old version
        seeder.client.publish(topic, '{"name":"old"}', qos=1, retain=True).wait_for_publish(5)
    assert set(retained(broker.port, subscribe, "homeassistant/#")) == set(legacy)

    pub = publishers(config)
    discovery.Discovery(config, pub, EMOTIONS).attach()
    pub.start()
    topic = discovery.discovery_topic(config)
    sub = subscribe(broker.port, ["homeassistant/#"])
    sub.wait_for(topic)
    wait_until(lambda: set(retained(broker.port, subscribe, "homeassistant/#")) == {topic}, 10, "only the new one")
    validate(topic, sub.on(topic)[0].text)

    before = len(sub.on(topic))
    seeder.client.publish("homeassistant/status", "offline").wait_for_publish(5)  # only "online" asks for a re-send
    time.sleep(1.0)  # twice the longest birth delay
    assert len(sub.on(topic)) == before, "Home Assistant going offline is no reason to re-send"
    seeder.client.publish("homeassistant/status", "online")
    wait_until(lambda: len(sub.on(topic)) == before + 1, 10, "discovery re-sent after the birth message")


def test_discovery_is_resent_on_home_assistants_own_status_topic_whatever_the_prefix(
    tmp_path: Path, broker: Broker, subscribe: Callable[..., Subscriber], publishers
) -> None:
    """Home Assistant's birth topic is a setting of its own: a changed discovery prefix does not move it."""
    config = make_config(
        tmp_path, **{"mqtt.port": broker.port, "homeassistant.birth_delay": 0.1, "homeassistant.discovery_prefix": "ha"}
    )
    pub = publishers(config)
    discovery.Discovery(config, pub, EMOTIONS).attach()
    pub.start()
    topic = discovery.discovery_topic(config)
    sub = subscribe(broker.port, ["ha/#"])
    sub.wait_for(topic)
    seeder = subscribe(broker.port, ["unused"])
    seeder.client.publish("homeassistant/status", "online")
    wait_until(lambda: len(sub.on(topic)) == 2, 10, "discovery re-sent after the birth on homeassistant/status")


def test_turning_discovery_off_removes_the_device(
    tmp_path: Path, broker: Broker, subscribe: Callable[..., Subscriber], publishers
) -> None:
    on = make_config(tmp_path, **{"mqtt.port": broker.port})
    pub = publishers(on)
    discovery.Discovery(on, pub, EMOTIONS).attach()
    pub.start()
    topic = discovery.discovery_topic(on)
    wait_until(lambda: topic in retained(broker.port, subscribe, "homeassistant/#"), 10, "discovery published")
    pub.stop(timeout=1)

    off = make_config(tmp_path, **{"mqtt.port": broker.port, "homeassistant.enabled": False})
    pub = publishers(off)
    discovery.Discovery(off, pub, EMOTIONS).attach()
    pub.start()
    wait_until(lambda: not retained(broker.port, subscribe, "homeassistant/#"), 10, "the discovery topic cleared")
