"""The rolling summary: what the room felt over the last ``summary.interval`` seconds, in one retained message.

``state`` says what the camera sees now and ``events`` tell each face's story; neither answers
"how was the last minute?" without a subscriber adding them up, and a dashboard that connects late
has missed the events. So the device adds them up itself, from what the tracker already produced
(the tracks seen on each frame, its start/end events): no extra inference, a few additions per frame.
A face counts while it is seen, as in ``analyze``'s summary, not during the ``tracker.max_missing``
grace after it left.

Face-time is counted in the source's clock (frame to frame), so a video file analysed faster than
real time still weighs each face by the seconds it was on screen; a gap between frames (a stalled
camera) counts as at most ``MAX_FRAME_GAP``. The window itself runs on the wall clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from edge.config import SummaryConfig
from edge.mqtt import payloads
from edge.mqtt.payloads import EventLike, TrackLike
from edge.mqtt.publisher import Publisher

MAX_FRAME_GAP = 1.0  # seconds one frame may stand for
START, END = "start", "end"


class SummaryWindow:
    """Face-seconds per emotion, face-weighted time and visits since the window opened."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = tuple(labels)
        self.face_seconds = dict.fromkeys(self.labels, 0.0)
        self.seconds = 0.0  # frame time covered
        self.visits_started = 0
        self.visits_ended = 0
        self._last_ts: float | None = None

    def observe(self, tracks: Sequence[TrackLike], ts: float) -> None:
        """One frame: each face in view adds the time since the previous frame to its emotion."""
        dt = 0.0 if self._last_ts is None else min(max(ts - self._last_ts, 0.0), MAX_FRAME_GAP)
        self._last_ts = ts
        self.seconds += dt
        for track in tracks:
            self.face_seconds[track.emotion] = self.face_seconds.get(track.emotion, 0.0) + dt

    def count(self, events: Sequence[EventLike]) -> None:
        self.visits_started += sum(e.kind == START for e in events)
        self.visits_ended += sum(e.kind == END for e in events)

    def next(self) -> SummaryWindow:
        """A fresh window that continues this one's clock, so no frame interval falls between two."""
        window = SummaryWindow(self.labels)
        window._last_ts = self._last_ts
        return window

    def body(self, *, device: str, wall: float, window: float) -> dict[str, Any]:
        total = sum(self.face_seconds.values())
        share = {label: round(s / total, 4) if total else 0.0 for label, s in self.face_seconds.items()}
        top = max(self.face_seconds.items(), key=lambda kv: kv[1]) if total else (payloads.NO_FACE, 0.0)
        return {
            "schema": payloads.SCHEMA,
            "ts": payloads.iso_utc(wall),
            "device": device,
            "window": round(window, 3),
            "seconds": round(self.seconds, 3),
            "face_seconds": round(total, 3),
            "faces_mean": round(total / self.seconds, 3) if self.seconds else 0.0,
            "predominant": top[0],
            "share": share,
            "visits_started": self.visits_started,
            "visits_ended": self.visits_ended,
        }


class RollingSummary:
    """Feeds a :class:`SummaryWindow` and publishes it (retained) every ``interval`` seconds; 0 = never."""

    def __init__(
        self,
        config: SummaryConfig,
        publisher: Publisher,
        topic: str,
        device: str,
        labels: Sequence[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = config.interval
        self.publisher = publisher
        self.topic = topic
        self.device = device
        self._clock = clock
        self._opened = clock()
        self._window = SummaryWindow(labels)

    def observe(self, tracks: Sequence[TrackLike], ts: float) -> None:
        """Call once per frame with the tracks seen on it; publishes when the interval is up."""
        self._window.observe(tracks, ts)
        if self.interval and self._clock() - self._opened >= self.interval:
            self.publish()

    def count(self, events: Sequence[EventLike]) -> None:
        """Every event the service publishes, the ends at stop included: visits started and ended."""
        self._window.count(events)

    def publish(self) -> None:
        """The window so far, retained; the next one starts now. Also called at stop."""
        if not self.interval:
            return
        now = self._clock()
        body = self._window.body(device=self.device, wall=time.time(), window=now - self._opened)
        self.publisher.publish(self.topic, payloads.encode(body), retain=True)
        self._window = self._window.next()
        self._opened = now
