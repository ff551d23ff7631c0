"""``emotion-edge forget``: clear every retained message this device left on the broker.

Run by ``setup.sh --uninstall`` after the service has stopped. Retained messages outlive their
publisher, so without this a removed Pi would stay in Home Assistant (its discovery) and in every
dashboard (its last state, ``offline``) for ever. It subscribes to ``<prefix>/<device>/#`` and the
discovery topics to find what is there, whatever the version that left it, and clears those with empty
retained payloads; and clears every topic this version or an older one may have left, seen or not, because
an access control that lets a device write its topics need not let it read them back.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from edge.config import Config
from edge.mqtt.discovery import discovery_topic, legacy_topics
from edge.mqtt.payloads import Topics
from edge.mqtt.publisher import make_client

log = logging.getLogger(__name__)

SETTLE = 1.0  # seconds after the subscription is granted for the broker to send what it retains


class ForgetError(RuntimeError):
    """The broker could not be reached or refused us; the message names it."""


@dataclass(frozen=True)
class Forgotten:
    found: list[str]  # retained topics the broker showed, cleared
    unseen: list[str]  # topics the device may have left that it did not show (none there, or not readable), cleared


def forget(config: Config, timeout: float = 10.0) -> Forgotten:
    """Clear the device's retained topics. Raises ForgetError."""
    c = config.mqtt
    topics = Topics.of(c.topic_prefix, c.device_id)
    base = topics.base
    discovery = [discovery_topic(config), *legacy_topics(config)]
    known, wanted = [*topics.retained, *discovery], [f"{base}/#", *discovery]
    found: set[str] = set()
    found_lock = threading.Lock()  # paho's thread may still be adding while the clearing begins
    subscribed = threading.Event()
    connected = threading.Event()
    refusal: list[str] = []
    client = make_client(c, f"emotion-edge-forget-{secrets.token_hex(3)}")

    def on_connect(client: mqtt.Client, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object) -> None:
        if reason.is_failure:
            refusal.append(str(reason))
        else:
            client.subscribe([(topic, 1) for topic in wanted])
        connected.set()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain and msg.payload:
            with found_lock:
                found.add(msg.topic)

    def on_subscribe(_c: mqtt.Client, _u: object, _mid: int, reasons: list[mqtt.ReasonCode], _p: object) -> None:
        # an access control may refuse the reading of what it lets the device write: said, and cleared unseen
        if refused := [f"{topic} ({reason})" for topic, reason in zip(wanted, reasons) if reason.is_failure]:
            log.warning("broker %s:%d refused the subscription to %s: what is retained there cannot be seen, so the "
                        "topics emotion-edge knows are cleared", c.host, c.port, ", ".join(refused))  # fmt: skip
        subscribed.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(c.host, c.port, keepalive=c.keepalive)
    except OSError as exc:
        raise ForgetError(f"MQTT: cannot reach the broker {c.host}:{c.port} ({exc})") from None
    client.loop_start()
    try:
        if not connected.wait(timeout) or refusal:
            reason = ", ".join(refusal) or f"no answer in {timeout:g} s"
            raise ForgetError(f"MQTT: broker {c.host}:{c.port} refused the connection: {reason}")
        if not subscribed.wait(timeout):
            raise ForgetError(f"MQTT: broker {c.host}:{c.port} did not grant the subscription to {base}/#")
        time.sleep(SETTLE)
        with found_lock:
            seen = set(found)
        forgotten = Forgotten(sorted(seen), [topic for topic in known if topic not in seen])
        infos = [client.publish(topic, b"", qos=1, retain=True) for topic in [*forgotten.found, *forgotten.unseen]]
        deadline = time.monotonic() + timeout
        while not all(i.is_published() for i in infos) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not all(i.is_published() for i in infos):
            raise ForgetError(f"MQTT: broker {c.host}:{c.port} did not confirm the clearing in {timeout:g} s")
    finally:
        client.disconnect()
        client.loop_stop()
    for topic in forgotten.found:
        log.info("cleared %s", topic)
    return forgotten
