"""Home Assistant MQTT discovery: the device and all its entities in one retained message.

Device-based discovery (Home Assistant 2024.11+): ``<discovery_prefix>/device/<node>/config`` carries
the device, the origin, the availability and every entity under ``components``. ``<node>`` and
every ``unique_id`` derive from the machine key (edge.identity), not from the topic level, so a
renamed device keeps its entities. The message is retained and re-sent on every reconnection, and
after a random delay when Home Assistant announces itself with ``online`` on its status topic
(a delay, so a house full of devices does not answer a restarted Home Assistant all at once).

With discovery turned off the same topic is cleared (an empty retained payload), and so are the four
per-entity topics older versions published, so neither turning it off nor upgrading leaves ghost
entities behind.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
from collections.abc import Sequence
from typing import Any

from edge import __version__
from edge.config import Config
from edge.identity import default_device_id, legacy_device_id, machine_key, short_hostname
from edge.mqtt.payloads import NO_FACE, OFFLINE, ONLINE, Topics
from edge.mqtt.publisher import Publisher

log = logging.getLogger(__name__)

ON, OFF = "ON", "OFF"
# The retained camera topic the reader publishes (online/offline); see docs/mqtt.md.
CAMERA_LEAF = "camera"
# What versions before device-based discovery published: <prefix>/sensor/emotion_edge_<device_id>/<object>/config.
LEGACY_OBJECTS = ("emotion", "faces", "confidence", "fps")
UNKNOWN = "None"  # what a value template renders for "unknown" (Home Assistant's PAYLOAD_NONE)


def node_id(key: str) -> str:
    """The discovery topic's object id; discovery topic levels allow only [A-Za-z0-9_-]."""
    return f"emotion_edge_{key}"


def legacy_topics(config: Config, hostname: str | None = None) -> list[str]:
    """The per-entity topics older versions published for this device: under its device id, and, when
    that is today's default, under the default of then (a stock hostname had no suffix; ``hostname``:
    this machine's)."""
    ids = [config.mqtt.device_id]
    if config.mqtt.device_id == default_device_id(hostname) and legacy_device_id(hostname) not in ids:
        ids.append(legacy_device_id(hostname))
    prefix = config.homeassistant.discovery_prefix
    return [
        f"{prefix}/sensor/emotion_edge_{re.sub(r'[^A-Za-z0-9_-]', '_', device)}/{name}/config"
        for device in ids
        for name in LEGACY_OBJECTS
    ]


def discovery_topic(config: Config, key: str | None = None) -> str:
    return f"{config.homeassistant.discovery_prefix}/device/{node_id(key or machine_key())}/config"


def preview_url(config: Config) -> str | None:
    """The live view's address as seen from the network, or None when it is off.

    A loopback or wildcard bind says nothing a browser elsewhere could use, so those become
    ``localhost`` (the SSH tunnel of docs/home-assistant.md) and ``<hostname>.local`` (mDNS).
    """
    p = config.preview
    if not p.enabled:
        return None
    host = p.bind
    if host.startswith("127.") or host == "::1":
        host = "localhost"
    elif host in ("0.0.0.0", "::", ""):
        host = f"{short_hostname()}.local"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{p.port}/"


def components(topics: Topics, labels: Sequence[str], key: str) -> dict[str, dict[str, Any]]:
    """Every entity, keyed by its component id; templates turn the JSON topics into states."""
    paused = "value_json.paused"
    camera = f"{topics.base}/{CAMERA_LEAF}"
    diagnostic = {"entity_category": "diagnostic"}
    entities: dict[str, dict[str, Any]] = {
        "emotion": {
            "platform": "sensor",
            "name": "Emotion",
            "icon": "mdi:emoticon-outline",
            "device_class": "enum",
            "options": [*labels, NO_FACE],
            "state_topic": topics.state,
            "value_template": f"{{{{ '{UNKNOWN}' if {paused} else value_json.emotion }}}}",
            "json_attributes_topic": topics.scores,
            "json_attributes_template": "{{ value_json.scores | tojson }}",
        },
        "faces": {
            "platform": "sensor",
            "name": "Faces",
            "icon": "mdi:account-group",
            "state_class": "measurement",
            "state_topic": topics.state,
            "value_template": f"{{{{ '{UNKNOWN}' if {paused} else value_json.faces }}}}",
        },
        "confidence": {
            "platform": "sensor",
            "name": "Confidence",
            "icon": "mdi:percent",
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "state_topic": topics.state,
            # No face, no confidence: unknown rather than a 0 % that would drag every average down.
            "value_template": f"{{{{ (value_json.confidence * 100) | round(0) if value_json.faces > 0 and not "
            f"{paused} else '{UNKNOWN}' }}}}",
        },
        "occupancy": {
            "platform": "binary_sensor",
            "name": "Occupancy",
            "device_class": "occupancy",
            "state_topic": topics.state,
            "value_template": f"{{{{ '{UNKNOWN}' if {paused} else ('{ON}' if value_json.faces > 0 else '{OFF}') }}}}",
            "payload_on": ON,
            "payload_off": OFF,
        },
        "face_event": {
            "platform": "event",
            "name": "Face",
            "icon": "mdi:face-recognition",
            "state_topic": topics.events,
            "event_types": ["start", "change", "end"],
            "value_template": "{{ {'event_type': value_json.type, 'emotion': value_json.emotion, "
            "'previous': value_json.get('previous'), 'track': value_json.track, "
            "'confidence': value_json.confidence} | tojson }}",
        },
        "detection": {
            "platform": "switch",
            "name": "Detection",
            "icon": "mdi:eye",
            "command_topic": topics.enabled_set,
            "state_topic": topics.enabled,
            "payload_on": ON,
            "payload_off": OFF,
        },
        "fps": {
            "platform": "sensor",
            "name": "Frame rate",
            "icon": "mdi:speedometer",
            "unit_of_measurement": "fps",
            "state_class": "measurement",
            "state_topic": topics.stats,
            "value_template": "{{ value_json.fps }}",
            **diagnostic,
        },
        "cpu_temperature": {
            "platform": "sensor",
            "name": "CPU temperature",
            "device_class": "temperature",
            "unit_of_measurement": "°C",
            "state_class": "measurement",
            "state_topic": topics.stats,
            "value_template": "{{ value_json.cpu_temperature }}",  # null -> None -> unknown (a VM)
            **diagnostic,
        },
        "events_dropped": {
            "platform": "sensor",
            "name": "Events dropped",
            "icon": "mdi:message-alert-outline",
            "state_class": "total_increasing",
            "state_topic": topics.stats,
            "value_template": "{{ value_json.events_dropped }}",
            **diagnostic,
        },
        "uptime": {
            "platform": "sensor",
            "name": "Uptime",
            "device_class": "duration",
            "unit_of_measurement": "s",
            "state_class": "measurement",
            "state_topic": topics.stats,
            "value_template": "{{ value_json.uptime | round(0) }}",
            **diagnostic,
        },
        "camera": {
            "platform": "binary_sensor",
            "name": "Camera",
            "device_class": "connectivity",
            "state_topic": camera,
            "payload_on": ONLINE,
            "payload_off": OFFLINE,
            **diagnostic,
        },
    }
    for object_id, entity in entities.items():
        entity["unique_id"] = f"{node_id(key)}_{object_id}"
    return entities


def message(config: Config, labels: Sequence[str], key: str | None = None) -> tuple[str, str]:
    """(topic, JSON payload) of the device discovery message."""
    key = key or machine_key()
    device_id = config.mqtt.device_id
    topics = Topics.of(config.mqtt.topic_prefix, device_id)
    device: dict[str, Any] = {
        "identifiers": [node_id(key)],
        "name": device_id,
        "manufacturer": "emotion-edge",
        "model": "emotion-edge (FER-2013 CNN, int8 TFLite)",
        "sw_version": __version__,
    }
    url = preview_url(config)
    if url:
        device["configuration_url"] = url
    body = {
        "device": device,
        "origin": {"name": "emotion-edge", "sw_version": __version__},
        "availability": [{"topic": topics.availability, "payload_available": ONLINE, "payload_not_available": OFFLINE}],
        "qos": config.mqtt.qos,
        "components": components(topics, labels, key),
    }
    return discovery_topic(config, key), json.dumps(body, separators=(",", ":"), ensure_ascii=False)


class Discovery:
    """Publishes (or, with discovery off, clears) the discovery message on every connection and,
    after a random delay, on Home Assistant's birth message."""

    def __init__(self, config: Config, publisher: Publisher, labels: Sequence[str]) -> None:
        self._enabled = config.homeassistant.enabled
        self._topic, self._payload = message(config, labels)
        self._legacy = legacy_topics(config)
        self._publisher = publisher
        self._status_topic = config.homeassistant.status_topic
        self._birth_delay = config.homeassistant.birth_delay
        self._timer: threading.Timer | None = None

    def attach(self) -> None:
        self._publisher.add_connect_hook(self.publish)
        if self._enabled:
            self._publisher.subscribe(self._status_topic, self._on_status)

    def publish(self) -> None:
        for topic in self._legacy:  # upgraders: the old per-entity entities go
            self._publisher.publish(topic, "", retain=True)
        self._publisher.publish(self._topic, self._payload if self._enabled else "", retain=True)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _on_status(self, _topic: str, payload: bytes, _retained: bool) -> None:
        if payload.strip() != ONLINE.encode():
            return
        delay = random.uniform(0, self._birth_delay)
        log.info("Home Assistant is online; re-sending discovery in %.1f s", delay)
        self.cancel()
        self._timer = threading.Timer(delay, self.publish)
        self._timer.daemon = True
        self._timer.start()
