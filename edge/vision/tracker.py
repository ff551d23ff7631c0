"""FaceTracker: gives each person a stable id across frames and steadies their emotion.

Per-frame classifications flicker (a blink, a half-turned head), and an MQTT subscriber wants
"this person became happy", not seven messages a second. So each track keeps an exponential
moving average of its probabilities whose *time constant* is ``smoothing`` seconds (so one config
reacts alike at 5 fps on a Pi and at 90 fps on a desktop), and changes label when another emotion's
smoothed score beats the current one's by ``hysteresis`` -- or at once when the classifier has named
that emotion on every look for ``steady`` seconds: strong, steady evidence moves the label fast, a
flicker never builds up a streak and is held. It emits an event at start, at each change, and at its
end, ``max_missing`` seconds after the face was last seen.

Boxes alone do not tell people apart: someone stepping into the spot another just left overlaps the old
box. So a box continues a track only when its look, a small gray thumbnail, correlates with the track's
by at least ``appearance``; otherwise it is a new person with a new track (the old one ends as missing).

A Haar cascade now and then finds a face in a curtain for a single frame. A track therefore starts only
once its face has been seen in ``min_hits`` frames in a row; until then it is tentative: it has no id,
emits nothing and is dropped silently the first frame it is missed. Its START event is dated
(``started``) and its ``sightings`` list where it was from its first frame, so nothing of a real face is
lost to the wait (``edge.pipeline.Backfill`` puts those frames back into per-frame output).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.vision.detector import Box

START, CHANGE, END = "start", "change", "end"
THUMB = 16  # thumbnail side: enough to tell two faces apart, too coarse to care about a blink or noise


def thumbnail(face: np.ndarray) -> np.ndarray:
    """A face crop's look as a unit vector (16x16 gray, mean removed): the dot product of two is their correlation."""
    gray = face if face.ndim == 2 else cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    small -= small.mean()
    norm = float(np.linalg.norm(small))
    return small / norm if norm > 1e-3 else small


def likeness(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Correlation of two thumbnails, 1 = same picture; 1 when either is unknown (no check possible)."""
    return 1.0 if a is None or b is None else float(np.dot(a, b))


def as_box(box: Sequence[int]) -> Box:
    """A box as plain ints (detectors hand in numpy ints, tuples or lists)."""
    x, y, w, h = box
    return int(x), int(y), int(w), int(h)


def comparable(track: Track, box: Box) -> bool:
    """Whether ``box`` frames a face much as the box of the track's thumbnail did (sizes within 20%).

    A cascade's box around one face now and then comes out a quarter bigger or smaller, and the same face
    framed differently looks like another (docs/pipeline.md); such a box is matched by position only (its
    look becomes the track's, so the next like-sized box is compared with it)."""
    return track.thumb_size > 0 and abs(box[2] - track.thumb_size) <= 0.2 * track.thumb_size


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
    thumb: np.ndarray | None = field(default=None, repr=False)  # its look, from a box of ``thumb_size``
    thumb_size: int = field(default=0, repr=False)
    classified: float = field(default=-math.inf, repr=False)  # ts of the last classification that fed it
    classified_look: np.ndarray | None = field(default=None, repr=False)  # its thumbnail then
    detected: float = field(default=-math.inf, repr=False)  # ts of the last frame a detector found it (not held)
    streak: tuple[int, float] = field(default=(-1, 0.0), repr=False)  # (label index, since) of the raw top label
    sightings: list[tuple[float, Box]] = field(default_factory=list, repr=False)  # while tentative, then kept


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
    centre lies within half a face width of one (a fast move at a low frame rate) still matches it,
    and neither counts when the look differs (``appearance``).

    ``smoothing`` is the time constant of the moving average in seconds (0 = use each look as is):
    after ``smoothing`` seconds of a new emotion, 63% of the average is the new one's.
    """

    def __init__(
        self,
        labels: Sequence[str],
        smoothing: float = 0.15,
        hysteresis: float = 0.1,
        max_missing: float = 1.0,
        iou_threshold: float = 0.3,
        min_hits: int = 1,
        appearance: float = 0.0,
        steady: float = 0.0,
    ) -> None:
        self.labels = tuple(labels)
        self.smoothing = smoothing
        self.hysteresis = hysteresis
        self.max_missing = max_missing
        self.iou_threshold = iou_threshold
        self.min_hits = min_hits
        self.appearance = appearance
        self.steady = steady
        self._tracks: dict[int, Track] = {}
        self._tentative: list[Track] = []  # id 0 until confirmed
        self._ids = itertools.count(1)

    @property
    def tracks(self) -> list[Track]:
        """Live confirmed tracks, including those unseen for less than ``max_missing``."""
        return list(self._tracks.values())

    @property
    def followed(self) -> list[Track]:
        """Confirmed and tentative tracks: every face the detector should look for near where it was."""
        return [*self._tracks.values(), *self._tentative]

    def assign(self, boxes: Sequence[Box], thumbs: Sequence[np.ndarray | None] | None = None) -> list[Track | None]:
        """The track (confirmed or tentative) each box would continue, None for a new face; changes nothing.

        The pipeline asks before classifying, so a face it already knows need not be classified again."""
        candidates = self.followed
        owners: list[Track | None] = [None] * len(boxes)
        for k, i in self._match(candidates, boxes, thumbs):
            owners[i] = candidates[k]
        return owners

    def update(
        self,
        boxes: Sequence[Box],
        probs: np.ndarray | Sequence[np.ndarray | None],
        ts: float,
        thumbs: Sequence[np.ndarray | None] | None = None,
    ) -> list[TrackEvent]:
        """Feed one frame's faces (``probs`` row i belongs to ``boxes[i]``; a None row: not classified
        this frame, the track keeps its scores); returns the events it caused."""
        if len(boxes) != len(probs):
            raise ValueError(f"{len(boxes)} boxes but {len(probs)} probability rows")
        thumbs = thumbs if thumbs is not None else [None] * len(boxes)
        events = []
        unmatched = set(range(len(boxes)))
        candidates = self.followed
        seen = set()
        for k, i in self._match(candidates, boxes, thumbs):
            unmatched.discard(i)
            track = candidates[k]
            event = self._observe(track, boxes[i], probs[i], ts, thumbs[i])
            if track.id:
                events += [event] if event else []
            else:
                track.hits += 1
                track.sightings.append((ts, as_box(boxes[i])))
                seen.add(k)
        # A tentative track missed in this frame is forgotten; the rest keep their order of arrival,
        # so faces that appear together get their ids in detection order.
        self._tentative = [t for k, t in enumerate(candidates) if k in seen]
        for i in sorted(unmatched):
            row = probs[i]
            if row is None:  # a face nobody classified cannot start a track
                continue
            self._tentative.append(self._new_track(boxes[i], row, ts, thumbs[i]))
        for track in [t for t in self._tentative if t.hits >= self.min_hits]:
            self._tentative.remove(track)
            events.append(self._confirm(track, ts))
        return events + self.expire(ts)

    def hold(self, track: Track, ts: float) -> None:
        """Counts ``track`` as seen at ``ts`` where it was, though no box was found for it: the caller
        checked that its look is still there (a detector's miss, not a person gone)."""
        track.last_seen = ts

    def expire(self, ts: float) -> list[TrackEvent]:
        """END for every track unseen for more than ``max_missing`` seconds at ``ts``, dated its last
        sighting. ``update`` calls it; call it yourself when no frames come (a stalled camera)."""
        return [
            self._end(track, track.last_seen)
            for track in list(self._tracks.values())
            if ts - track.last_seen > self.max_missing
        ]

    def close(self, ts: float) -> list[TrackEvent]:
        """END for every live track, dated ``ts``: at stop, the faces were there until we stopped looking."""
        self._tentative = []
        return [self._end(track, ts) for track in list(self._tracks.values())]

    def _match(
        self, known: Sequence[Track], boxes: Sequence[Box], thumbs: Sequence[np.ndarray | None] | None
    ) -> list[tuple[int, int]]:
        """Pairs (index in ``known``, index in ``boxes``); confirmed tracks come first in ``known``,
        so on a tie they win the box."""
        pairs = []
        for k, track in enumerate(known):
            for i, box in enumerate(boxes):
                if (
                    self.appearance > 0
                    and thumbs is not None
                    and comparable(track, box)
                    and likeness(track.thumb, thumbs[i]) < self.appearance
                ):
                    continue  # somebody else
                overlap = iou(track.box, box)
                if overlap >= self.iou_threshold:
                    pairs.append((0, -overlap, k, i))
                else:
                    distance = centre_distance(track.box, box)
                    if distance <= 0.5:
                        pairs.append((1, distance, k, i))
        matches, used_known, used_boxes = [], set(), set()
        for _, _, k, i in sorted(pairs):
            if k not in used_known and i not in used_boxes:
                matches.append((k, i))
                used_known.add(k)
                used_boxes.add(i)
        return matches

    def _new_track(self, box: Box, probs: np.ndarray, ts: float, thumb: np.ndarray | None) -> Track:
        smoothed = np.asarray(probs, dtype=np.float64)
        top = int(smoothed.argmax())
        track = Track(0, as_box(box), self.labels[top], 0.0, {}, ts, ts, smoothed, thumb=thumb, classified=ts)
        track.classified_look, track.detected, track.thumb_size = thumb, ts, box[2]
        track.streak = (top, ts)
        track.sightings.append((ts, as_box(box)))
        self._refresh(track)
        return track

    def _confirm(self, track: Track, ts: float) -> TrackEvent:
        """Ids are handed out here, so they count real faces: 1, 2, 3, with no gaps for false ones."""
        track.id = next(self._ids)
        self._tracks[track.id] = track
        return self._event(START, track, ts)

    def _observe(
        self, track: Track, box: Box, probs: np.ndarray | None, ts: float, thumb: np.ndarray | None
    ) -> TrackEvent | None:
        if thumb is not None:
            track.thumb, track.thumb_size = thumb, box[2]
        track.box = as_box(box)
        track.last_seen = track.detected = ts
        if probs is None:
            return None
        track.classified_look = thumb
        raw = np.asarray(probs, np.float64)
        past = math.exp(-(ts - track.classified) / self.smoothing) if self.smoothing > 0 else 0.0
        track.smoothed = past * track.smoothed + (1.0 - past) * raw
        track.classified = ts
        raw_top = int(raw.argmax())
        if raw_top != track.streak[0]:
            track.streak = (raw_top, ts)
        top = int(track.smoothed.argmax())
        current = self.labels.index(track.emotion)
        previous = track.emotion
        leads = top != current and track.smoothed[top] - track.smoothed[current] > self.hysteresis
        label, since = track.streak
        steady = self.steady > 0 and label != current and ts - since >= self.steady - 1e-9
        changed = leads or steady
        if steady:  # the evidence is the new emotion's: the average starts again from it
            track.emotion, track.smoothed = self.labels[label], raw
        elif changed:
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
