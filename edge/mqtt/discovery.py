"""Home Assistant MQTT discovery: the device and its sensors appear in Home Assistant by themselves.

One config message per sensor on ``<discovery_prefix>/sensor/<node>/<object>/config`` (retained, so
a Home Assistant that starts later still finds them), re-sent on every reconnection and whenever
Home Assistant announces itself with ``online`` on ``<discovery_prefix>/status`` (its birth message),
which is how discovery survives a broker that lost its retained messages.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from edge import __version__
from edge.config import Config
from edge.mqtt.payloads import OFFLINE, ONLINE, Topics
from edge.mqtt.publisher import Publisher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sensor:
    name: str
    topic: str  # "state" or "stats": which of the device's topics carries the value
    template: str
    extra: dict[str, Any] = field(default_factory=dict)
    scores_as_attributes: bool = False  # the 7 scores shown as attributes of the entity


SENSORS: dict[str, Sensor] = {
    "emotion": Sensor("Emotion", "state", "{{ value_json.emotion }}", {"icon": "mdi:emoticon-outline"}, True),
    "faces": Sensor(
        "Faces", "state", "{{ value_json.faces }}", {"icon": "mdi:account-group", "state_class": "measurement"}
    ),
    "confidence": Sensor(
        "Confidence",
        "state",
        "{{ (value_json.confidence * 100) | round(0) }}",
        {"icon": "mdi:percent", "unit_of_measurement": "%", "state_class": "measurement"},
    ),
    "fps": Sensor(
        "Frame rate",
        "stats",
        "{{ value_json.fps }}",
        {"icon": "mdi:speedometer", "unit_of_measurement": "fps", "state_class": "measurement",
         "entity_category": "diagnostic"},
    ),
}  # fmt: skip


def node_id(device_id: str) -> str:
    """Discovery topic levels allow only [A-Za-z0-9_-]."""
    return "emotion_edge_" + re.sub(r"[^A-Za-z0-9_-]", "_", device_id)


def messages(config: Config) -> list[tuple[str, str]]:
    """(topic, JSON payload) for every sensor of this device."""
    device_id = config.mqtt.device_id
    topics = Topics.of(config.mqtt.topic_prefix, device_id)
    node = node_id(device_id)
    device = {
        "identifiers": [node],
        "name": device_id,
        "manufacturer": "emotion-edge",
        "model": "emotion-edge (FER-2013 CNN, int8 TFLite)",
        "sw_version": __version__,
    }
    out = []
    for object_id, sensor in SENSORS.items():
        state_topic = getattr(topics, sensor.topic)
        body: dict[str, Any] = {
            "name": sensor.name,
            "unique_id": f"{node}_{object_id}",
            "state_topic": state_topic,
            "value_template": sensor.template,
            "availability_topic": topics.availability,
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "device": device,
            "origin": {"name": "emotion-edge", "sw_version": __version__},
            **sensor.extra,
        }
        if sensor.scores_as_attributes:
            body["json_attributes_topic"] = state_topic  # scores and confidence become attributes
            body["json_attributes_template"] = "{{ value_json.scores | tojson }}"
        topic = f"{config.homeassistant.discovery_prefix}/sensor/{node}/{object_id}/config"
        out.append((topic, json.dumps(body, separators=(",", ":"))))
    return out


class Discovery:
    """Publishes the discovery messages on connect and on Home Assistant's birth message."""

    def __init__(self, config: Config, publisher: Publisher) -> None:
        self._messages = messages(config)
        self._publisher = publisher
        self._status_topic = f"{config.homeassistant.discovery_prefix}/status"

    def attach(self) -> None:
        self._publisher.add_connect_hook(self.publish)
        self._publisher.subscribe(self._status_topic, self._on_status)

    def publish(self) -> None:
        for topic, payload in self._messages:
            self._publisher.publish(topic, payload, retain=True)

    def _on_status(self, _topic: str, payload: bytes) -> None:
        if payload.strip() == ONLINE.encode():
            log.info("Home Assistant is online; re-sending discovery")
            self.publish()
