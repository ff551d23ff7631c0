"""A client's link to the broker, as a person reading the journal follows it: one line when an outage
begins (the broker unreachable, or the connection lost), one per distinct refusal, one when it is
back with the time it was away, and a retry schedule that reaches a restarted broker soon without a
fleet of devices knocking in step. The service's publisher and ``watch`` both keep one.
"""

from __future__ import annotations

import logging
import random
import time

from edge.config import MqttConfig

log = logging.getLogger(__name__)

RECONNECT_FIRST = 0.5  # seconds before the first retry; doubles up to mqtt.reconnect_max


class Link:
    """The state of one outage at a time. ``meanwhile`` ends the outage lines with what the client does
    while away (the service: ", events kept in the outbox"). Not thread-safe: call it from paho's thread."""

    def __init__(self, config: MqttConfig, meanwhile: str = "") -> None:
        self.broker = f"{config.host}:{config.port}"
        self._max = config.reconnect_max
        self._meanwhile = meanwhile
        self._logged = False  # this outage has had its line
        self._since: float | None = None  # monotonic start of the outage; None while connected
        self._refusal = ""
        self._attempt = 0

    def next_delay(self) -> float:
        """Seconds before the next attempt: doubling from RECONNECT_FIRST to ``mqtt.reconnect_max``, each
        drawn from its upper half, so retries spread out but never wait longer than the cap."""
        ceiling = min(self._max, RECONNECT_FIRST * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 30)
        return random.uniform(ceiling / 2, ceiling)

    def unreachable(self, why: str = "") -> None:
        """An attempt failed before the broker answered (``why``, where known)."""
        self._since = self._since or time.monotonic()
        if not self._logged:
            detail = f" ({why})" if why else ""
            log.warning("MQTT: broker %s unreachable%s; retrying every %g s at most%s", self.broker, detail,
                        self._max, self._meanwhile)  # fmt: skip
            self._logged = True

    def refused(self, reason: object) -> None:
        """The broker answered and refused (bad credentials repeat on every attempt: said once)."""
        self._since = self._since or time.monotonic()
        if str(reason) != self._refusal:
            log.error("MQTT: broker %s refused the connection: %s", self.broker, reason)
            self._refusal = str(reason)

    def lost(self, reason: object) -> None:
        self._since = time.monotonic()
        self._logged = True  # the attempts that fail while it is away add nothing to this line
        log.warning("MQTT: connection to the broker lost (%s); reconnecting%s", reason, self._meanwhile)

    def connected(self) -> str:
        """The outage is over: " after N s away" if there was one (for the caller's connected line), else ""."""
        away = f" after {time.monotonic() - self._since:.1f} s away" if self._since is not None else ""
        self._logged, self._since, self._refusal, self._attempt = False, None, "", 0
        return away
