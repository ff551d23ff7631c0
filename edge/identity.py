"""Who this device is: the topic level it publishes under and the key Home Assistant knows it by.

Every Raspberry Pi OS image is called ``raspberrypi``, so the hostname alone makes two untouched Pis
share topics and Home Assistant ``unique_id``s. Where the hostname is one of those stock names the
device id gains a suffix derived from ``/etc/machine-id`` (unique per installation, stable across
reboots); a hostname someone chose is kept as it is. Home Assistant's ids always derive from the
machine id, never from the topic level, so renaming the device does not duplicate its entities.

The machine id itself is never published: systemd asks applications to use a keyed hash of it
(``sd_id128_get_machine_app_specific``), which is what :func:`machine_key` does.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

MACHINE_ID = Path("/etc/machine-id")
# Another file to read instead of /etc/machine-id: for tests, and containers that bind-mount one elsewhere.
MACHINE_ID_ENV = "EMOTION_EDGE_MACHINE_ID_FILE"
APP_KEY = b"emotion-edge"
# Names images ship with or that say nothing about the machine: not unique enough to be a device id.
STOCK_HOSTNAMES = frozenset(
    {"raspberrypi", "raspberry", "pi", "localhost", "dietpi", "ubuntu", "debian", "orangepi", "emotion-edge", "none"}
)
_MACHINE_ID = re.compile(r"^[0-9a-f]{32}$")


def machine_id_path(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env[MACHINE_ID_ENV]) if env.get(MACHINE_ID_ENV) else MACHINE_ID


def machine_id(env: Mapping[str, str] = os.environ) -> str | None:
    """The 32 hex digits of the machine id, or None where there is none (some containers)."""
    path = machine_id_path(env)
    try:
        text = path.read_text().strip().lower()
    except OSError:
        return None
    return text if _MACHINE_ID.match(text) else None


def machine_key(env: Mapping[str, str] = os.environ, hostname: str | None = None) -> str:
    """12 hex digits naming this installation: a keyed hash of the machine id, or of the hostname
    where there is no machine id (then two machines with one hostname collide, as before)."""
    secret = machine_id(env)
    if secret is None:
        log.warning("%s: no machine id; Home Assistant ids derive from the hostname", machine_id_path(env))
        secret = hostname or short_hostname()
    return hmac.new(secret.encode(), APP_KEY, hashlib.sha256).hexdigest()[:12]


def short_hostname() -> str:
    return socket.gethostname().split(".")[0]


def default_device_id(hostname: str | None = None, env: Mapping[str, str] = os.environ) -> str:
    """The short hostname made topic-safe, plus ``-<6 hex digits>`` of the machine key when it is a
    stock name: ``kitchen-pi`` stays ``kitchen-pi``, ``raspberrypi`` becomes ``raspberrypi-3f9a2c``."""
    host = short_hostname() if hostname is None else hostname.split(".")[0]
    # What a topic level allows (config.py's pattern): it starts with a letter or digit.
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", host).strip("-._") or "emotion-edge"
    if cleaned.lower() in STOCK_HOSTNAMES:
        return f"{cleaned}-{machine_key(env, host)[:6]}"
    return cleaned


def legacy_device_id(hostname: str | None = None) -> str:
    """The device id versions before 0.2.0 took by default, the short hostname made topic-safe with no
    suffix: an upgrader's broker still holds that device's old discovery topics, to be cleared."""
    host = short_hostname() if hostname is None else hostname.split(".")[0]
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", host).strip("-.") or "emotion-edge"
    return cleaned if cleaned[0].isalnum() else f"pi-{cleaned}"
