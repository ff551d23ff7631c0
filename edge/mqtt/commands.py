"""Commands from the broker: ``<prefix>/<device>/enabled/set`` with ``ON`` or ``OFF``.

The one command there is pauses the device (a household's privacy switch, like Frigate's
``…/enabled/set``) or resumes it. Only this device's exact command topic is subscribed, and a payload
is compared with two constants and never used otherwise: nothing received reaches a shell, a file
path or the config. The value in force is published retained on ``<prefix>/<device>/enabled`` and
kept in a file in systemd's StateDirectory, so a paused camera stays paused across a reboot.

Messages arrive in paho's thread; the service's frame loop takes the wanted value with
:meth:`EnabledSwitch.take` and applies it there, where the camera is opened and closed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from edge.mqtt.payloads import Topics
from edge.mqtt.publisher import Publisher

log = logging.getLogger(__name__)

ON, OFF = "ON", "OFF"
STATE_FILE = "enabled"
MAX_SHOWN = 40  # characters of a bad payload shown in the log
MAX_COMMAND = 16  # bytes: a longer payload is no command, and is not decoded (a broker takes up to 256 MB)


def state_path(env: Mapping[str, str] = os.environ) -> Path | None:
    """``$STATE_DIRECTORY/enabled`` under systemd; None (not kept) elsewhere."""
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) / STATE_FILE if state else None


def parse(payload: bytes) -> bool | None:
    """True for ON, False for OFF (any case, surrounding blanks ignored), None for anything else."""
    if len(payload) > MAX_COMMAND:
        return None
    try:
        text = payload.decode("ascii").strip().upper()
    except UnicodeDecodeError:
        return None
    return {ON: True, OFF: False}.get(text)


class EnabledSwitch:
    """The pause switch: remembers the value in force, hears the command topic, publishes the state."""

    def __init__(self, publisher: Publisher, topics: Topics, path: Path | None) -> None:
        self._publisher = publisher
        self._topics = topics
        self._path = path
        self._lock = threading.Lock()
        self._wanted: bool | None = None
        self._bad_logged = False
        self.enabled = self._load()

    def attach(self) -> None:
        """Subscribe to the command topic and (re)publish the value in force on every connection."""
        self._publisher.subscribe(self._topics.enabled_set, self._on_command)
        self._publisher.add_connect_hook(self.publish)

    def publish(self) -> None:
        self._publisher.publish(self._topics.enabled, ON if self.enabled else OFF, retain=True)

    def take(self) -> bool | None:
        """The value asked for since the last call if it differs from the one in force, else None."""
        with self._lock:
            wanted, self._wanted = self._wanted, None
        return None if wanted is None or wanted == self.enabled else wanted

    def applied(self, enabled: bool) -> None:
        """The service has paused or resumed: keep the value and tell the broker."""
        self.enabled = enabled
        self._save()
        self.publish()

    def _on_command(self, _topic: str, payload: bytes, retained: bool) -> None:
        if not payload:  # someone clearing a retained command (mosquitto_pub -r -n): nothing asked
            return
        if retained:  # a command is for the moment it is sent: a stored one would undo every later pause
            log.warning("%s: ignoring a retained %r: commands are not retained (clear it with mosquitto_pub -r -n "
                        "-t %s)", self._topics.enabled_set, payload[:MAX_SHOWN], self._topics.enabled_set)  # fmt: skip
            return
        value = parse(payload)
        if value is None:
            if not self._bad_logged:  # one line, not one per message from a misconfigured sender
                shown = repr(payload[:MAX_SHOWN])
                log.warning("%s: ignoring %s (expected %s or %s)", self._topics.enabled_set, shown, ON, OFF)
                self._bad_logged = True
            return
        self._bad_logged = False
        with self._lock:
            self._wanted = value

    def _load(self) -> bool:
        """The value kept; paused when the file is there but unreadable or torn: a privacy switch fails closed,
        and ``ON`` from the broker resumes."""
        if self._path is None:
            return True
        try:
            text = self._path.read_text().strip()
        except FileNotFoundError:
            return True
        except OSError as exc:
            log.error("%s: cannot read the pause state, staying paused until ON (%s)", self._path, exc.strerror)
            return False
        if text not in (ON, OFF):
            log.error("%s: unexpected content %r, staying paused until ON", self._path, text[:MAX_SHOWN])
            return False
        return text == ON

    def _save(self) -> None:
        if self._path is None:
            return
        partial = self._path.with_name(self._path.name + ".partial")
        try:  # written, fsynced, renamed, and the rename fsynced: a power cut leaves the old value or the new
            with open(partial, "w") as f:
                f.write((ON if self.enabled else OFF) + "\n")
                f.flush()
                os.fsync(f.fileno())
            partial.replace(self._path)
            folder = os.open(self._path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            log.error("%s: cannot keep the pause state across a restart (%s)", self._path, exc.strerror)
