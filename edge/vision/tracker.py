"""FaceTracker: gives each face a stable id across frames and steadies its emotion.

Per-frame classifications flicker (a blink, a half-turned head), and an MQTT subscriber wants
"this person became happy", not seven messages a second. So each track keeps an exponential
moving average of its probabilities and only changes label when another emotion's smoothed score
beats the current one's by ``hysteresis``; it emits an event at start, at each such change, and
at its end, ``max_missing`` seconds after it was last seen.

A Haar cascade now and then finds a face in a curtain for a single frame. A track therefore
starts only once its face has been seen in ``min_hits`` frames in a row; until then it is
tentative: it has no id, emits nothing and is dropped silently the first frame it is missed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.vision.detector import Box

START, CHANGE, END = "start", "change", "end"


@dataclass
class Track:
    id: int
    box: Box
    emotion: str
    confidence: float  # the smoothed score of ``emotion``
    scores: dict[str, float]  # smoothed, one per label
    started: float
    last_seen: float
    smoothed: np.ndarray = field(repr=False)
    hits: int = field(default=1, repr=False)  # frames seen in a row while tentative


@dataclass
class TrackEvent:
    kind: str  # START, CHANGE or END
    track: int
    emotion: str
    confidence: float
    scores: dict[str, float]
    box: Box
    started: float
    ts: float  # an END found by update() is dated the last sighting, so ts - started is how long the face was there
    previous: str | None = None  # CHANGE only: the emotion before it

    @property
    def duration(self) -> float:
        return self.ts - self.started


def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = min(ax + aw, bx + bw) - max(ax, bx)
    h = min(ay + ah, by + bh) - max(ay, by)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (aw * ah + bw * bh - inter)


def centre_distance(a: Box, b: Box) -> float:
    """Distance between centres in units of the smaller box's width: scale-free, so near and far faces match alike."""
    dx = (a[0] + a[2] / 2) - (b[0] + b[2] / 2)
    dy = (a[1] + a[3] / 2) - (b[1] + b[3] / 2)
    return math.hypot(dx, dy) / max(1, min(a[2], b[2]))


class FaceTracker:
    """Matches boxes to tracks greedily, best overlap first; a box overlapping no track but whose
    centre lies within half a face width of one (a fast move at a low frame rate) still matches it.

    ``smoothing`` is the weight of the past in the moving average (0 = use each frame as is).
    """

    def __init__(
        self,
        labels: Sequence[str],
        smoothing: float = 0.6,
        hysteresis: float = 0.1,
        max_missing: float = 1.0,
        iou_threshold: float = 0.3,
        min_hits: int = 1,
    ) -> None:
        self.labels = tuple(labels)
        self.smoothing = smoothing
        self.hysteresis = hysteresis
        self.max_missing = max_missing
        self.iou_threshold = iou_threshold
        self.min_hits = min_hits
        self._tracks: dict[int, Track] = {}
        self._tentative: list[Track] = []  # id 0 until confirmed
        self._ids = itertools.count(1)

    @property
    def tracks(self) -> list[Track]:
        """Live confirmed tracks, including those unseen for less than ``max_missing``."""
        return list(self._tracks.values())

    def update(self, boxes: Sequence[Box], probs: np.ndarray, ts: float) -> list[TrackEvent]:
        """Feed one frame's faces (``probs`` row i belongs to ``boxes[i]``); returns the events it caused."""
        if len(boxes) != len(probs):
            raise ValueError(f"{len(boxes)} boxes but {len(probs)} probability rows")
        events = []
        unmatched = set(range(len(boxes)))
        candidates = [*self._tracks.values(), *self._tentative]
        seen = set()
        for k, i in self._match([t.box for t in candidates], boxes):
            unmatched.discard(i)
            track = candidates[k]
            event = self._observe(track, boxes[i], probs[i], ts)
            if track.id:
                events += [event] if event else []
            else:
                track.hits += 1
                seen.add(k)
        # A tentative track missed in this frame is forgotten; the rest keep their order of arrival,
        # so faces that appear together get their ids in detection order.
        self._tentative = [t for k, t in enumerate(candidates) if k in seen]
        for i in sorted(unmatched):
            self._tentative.append(self._new_track(boxes[i], probs[i], ts))
        for track in [t for t in self._tentative if t.hits >= self.min_hits]:
            self._tentative.remove(track)
            events.append(self._confirm(track, ts))
        for track in [t for t in self._tracks.values() if ts - t.last_seen > self.max_missing]:
            events.append(self._end(track, track.last_seen))
        return events

    def expire(self, ts: float) -> list[TrackEvent]:
        """END for the tracks unseen for over ``max_missing`` at ``ts``, dated their last sighting: when
        frames stop coming, the clock ends the faces instead of a next frame that may be minutes away."""
        return [self._end(t, t.last_seen) for t in list(self._tracks.values()) if ts - t.last_seen > self.max_missing]

    def close(self, ts: float) -> list[TrackEvent]:
        """END for every live track, dated ``ts``: at stop, the faces were there until we stopped looking."""
        self._tentative = []
        return [self._end(track, ts) for track in list(self._tracks.values())]

    def _match(self, known: Sequence[Box], boxes: Sequence[Box]) -> list[tuple[int, int]]:
        """Pairs (index in ``known``, index in ``boxes``); confirmed tracks come first in ``known``,
        so on a tie they win the box."""
        pairs = []
        for k, old in enumerate(known):
            for i, box in enumerate(boxes):
                overlap = iou(old, box)
                if overlap >= self.iou_threshold:
                    pairs.append((0, -overlap, k, i))
                else:
                    distance = centre_distance(old, box)
                    if distance <= 0.5:
                        pairs.append((1, distance, k, i))
        matches, used_known, used_boxes = [], set(), set()
        for _, _, k, i in sorted(pairs):
            if k not in used_known and i not in used_boxes:
                matches.append((k, i))
                used_known.add(k)
                used_boxes.add(i)
        return matches

    def _new_track(self, box: Box, probs: np.ndarray, ts: float) -> Track:
        smoothed = np.asarray(probs, dtype=np.float64)
        top = int(smoothed.argmax())
        track = Track(0, tuple(box), self.labels[top], 0.0, {}, ts, ts, smoothed)
        self._refresh(track)
        return track

    def _confirm(self, track: Track, ts: float) -> TrackEvent:
        """Ids are handed out here, so they count real faces: 1, 2, 3, with no gaps for false ones."""
        track.id = next(self._ids)
        self._tracks[track.id] = track
        return self._event(START, track, ts)

    def _observe(self, track: Track, box: Box, probs: np.ndarray, ts: float) -> TrackEvent | None:
        track.box = tuple(box)
        track.last_seen = ts
        track.smoothed = self.smoothing * track.smoothed + (1.0 - self.smoothing) * np.asarray(probs, np.float64)
        top = int(track.smoothed.argmax())
        current = self.labels.index(track.emotion)
        changed = top != current and track.smoothed[top] - track.smoothed[current] > self.hysteresis
        previous = track.emotion
        if changed:
            track.emotion = self.labels[top]
        self._refresh(track)
        return self._event(CHANGE, track, ts, previous) if changed else None

    def _refresh(self, track: Track) -> None:
        track.scores = {label: round(float(p), 4) for label, p in zip(self.labels, track.smoothed)}
        track.confidence = track.scores[track.emotion]

    def _end(self, track: Track, ts: float) -> TrackEvent:
        del self._tracks[track.id]
        return self._event(END, track, ts)

    @staticmethod
    def _event(kind: str, track: Track, ts: float, previous: str | None = None) -> TrackEvent:
        return TrackEvent(
            kind, track.id, track.emotion, track.confidence, dict(track.scores), track.box, track.started, ts, previous
        )
