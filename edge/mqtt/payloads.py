"""The MQTT contract: topic names and the JSON bodies subscribers receive.

This is the product's public API (Home Assistant, Node-RED and scripts parse it), so every body
carries ``"schema": SCHEMA`` and fields are only ever added under the same number; renaming or
removing one means a new number. Only numbers and labels leave the device, never pixels.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

SCHEMA = 1
ONLINE = "online"
OFFLINE = "offline"
NO_FACE = "none"


@dataclass(frozen=True)
class Topics:
    """``<topic_prefix>/<device_id>/…``: one base per device so many Pis share a broker."""

    base: str
    availability: str
    state: str
    events: str
    stats: str

    @classmethod
    def of(cls, topic_prefix: str, device_id: str) -> Topics:
        base = f"{topic_prefix}/{device_id}"
        return cls(base, *(f"{base}/{leaf}" for leaf in ("availability", "state", "events", "stats")))

    @property
    def camera(self) -> str:
        """``online`` or ``offline`` (retained): whether frames are coming, as opposed to whether the device is up."""
        return f"{self.base}/camera"

    @property
    def summary(self) -> str:
        """The rolling summary (retained): the room over the last ``summary.interval`` (edge.mqtt.summary)."""
        return f"{self.base}/summary"

    @property
    def scores(self) -> str:
        """The 7 scores alone, at a bounded rate: Home Assistant's attributes of the Emotion entity."""
        return f"{self.base}/scores"

    @property
    def enabled(self) -> str:
        """``ON`` or ``OFF`` (retained): whether the device is watching or paused."""
        return f"{self.base}/enabled"

    @property
    def enabled_set(self) -> str:
        """Where ``ON``/``OFF`` commands arrive (edge.mqtt.commands)."""
        return f"{self.enabled}/set"

    @property
    def retained(self) -> tuple[str, ...]:
        """What may hold a retained message of this device: its own, and a command someone left retained."""
        return (self.availability, self.state, self.stats, self.camera, self.summary, self.scores, self.enabled,
                self.enabled_set)  # fmt: skip


class TrackLike(Protocol):
    """What edge.vision.tracker's Track and TrackEvent share and the payloads read."""

    emotion: str
    confidence: float
    scores: dict[str, float]


class EventLike(TrackLike, Protocol):
    """edge.vision.tracker.TrackEvent, as far as the payload reads it."""

    kind: str
    track: int
    box: tuple[int, int, int, int]
    started: float
    ts: float
    previous: str | None  # the emotion before a change; None on start and end


def iso_utc(wall: float) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, which every JSON consumer parses."""
    return datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(body: Mapping[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def _prob(p: float) -> float:
    return round(float(p), 4)


def _scores(scores: Mapping[str, float], labels: Sequence[str]) -> dict[str, float]:
    """All labels in the canonical order, so a subscriber can rely on every key being present."""
    return {label: _prob(scores.get(label, 0.0)) for label in labels}


def event(event: EventLike, *, device: str, wall: float, labels: Sequence[str], run: str, seq: int) -> dict[str, Any]:
    """One track event (start/change/end); ``duration`` is seconds the face has been seen so far; a
    change says what the emotion was before in ``previous``, so it stands alone.

    ``run`` (random, new at every start) and ``seq`` (1, 2, 3 … within the run) name the event, because
    delivery is at least once: after a lost connection the outbox sends again what the broker had not
    acknowledged, and a consumer drops what it has already seen by (``run``, ``seq``).
    """
    body = {
        "schema": SCHEMA,
        "type": event.kind,
        "ts": iso_utc(wall),
        "device": device,
        "track": int(event.track),
        "emotion": event.emotion,
        "confidence": _prob(event.confidence),
        "scores": _scores(event.scores, labels),
        "box": [int(v) for v in event.box],
        "duration": round(max(0.0, float(event.ts - event.started)), 3),
        "run": run,
        "seq": seq,
    }
    if event.previous is not None:
        body["previous"] = event.previous
    return body


def summarize(tracks: Sequence[TrackLike], labels: Sequence[str]) -> tuple[str, float, dict[str, float]]:
    """(dominant emotion, its confidence, mean scores) over the faces in view.

    The dominant emotion is the one most faces show (ties: the larger summed confidence), taken from
    the tracks' smoothed, hysteresis-held labels so the summary does not flicker more than they do.
    """
    if not tracks:
        return NO_FACE, 0.0, dict.fromkeys(labels, 0.0)
    votes: dict[str, tuple[int, float]] = {}
    for t in tracks:
        count, total = votes.get(t.emotion, (0, 0.0))
        votes[t.emotion] = (count + 1, total + float(t.confidence))
    emotion, (count, total) = max(votes.items(), key=lambda kv: kv[1])
    mean = {label: sum(float(t.scores.get(label, 0.0)) for t in tracks) / len(tracks) for label in labels}
    return emotion, total / count, mean


def state(
    tracks: Sequence[TrackLike], *, device: str, wall: float, labels: Sequence[str], paused: bool = False
) -> dict[str, Any]:
    """The retained summary a subscriber (or Home Assistant) reads first; ``paused`` says the camera
    is switched off (edge.mqtt.commands), so "no face" means "not looking", not "nobody there"."""
    emotion, confidence, scores = summarize(tracks, labels)
    return {
        "schema": SCHEMA,
        "ts": iso_utc(wall),
        "device": device,
        "faces": len(tracks),
        "emotion": emotion,
        "confidence": _prob(confidence),
        "scores": _scores(scores, labels),
        "paused": paused,
    }


def scores(body: Mapping[str, Any]) -> dict[str, Any]:
    """The state's scores alone, for the ``…/scores`` topic."""
    return {key: body[key] for key in ("schema", "ts", "device", "faces", "scores")}


def state_key(body: Mapping[str, Any]) -> tuple[int, str, bool]:
    """What counts as a change of state: a new number of faces, a new dominant emotion, a pause.

    Scores move every frame; re-sending a retained message for each would flood the broker.
    """
    return body["faces"], body["emotion"], body["paused"]


@dataclass
class Stats:
    """One stats period's figures, gathered by the service."""

    fps: float
    stages_ms: dict[str, float]
    frames: int
    frames_dropped: int
    faces: int
    queue_depth: int
    events_dropped: int
    mqtt_reconnects: int
    source_state: str
    source_reconnects: int
    cpu_temperature: float | None
    uptime: float
    model_sha256: str
    backend: str
    version: str


def stats(s: Stats, *, device: str, wall: float) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "ts": iso_utc(wall),
        "device": device,
        "version": s.version,
        "uptime": round(s.uptime, 1),
        "fps": round(s.fps, 2),
        "stages_ms": {name: round(ms, 2) for name, ms in s.stages_ms.items()},
        "frames": s.frames,
        "frames_dropped": s.frames_dropped,
        "faces": s.faces,
        "queue_depth": s.queue_depth,
        "events_dropped": s.events_dropped,
        "mqtt_reconnects": s.mqtt_reconnects,
        "source_state": s.source_state,
        "source_reconnects": s.source_reconnects,
        "cpu_temperature": None if s.cpu_temperature is None else round(s.cpu_temperature, 1),
        "model_sha256": s.model_sha256,
        "backend": s.backend,
    }
