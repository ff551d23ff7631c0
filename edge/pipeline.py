"""Pipeline: one frame in, the faces on it (tracked, with steadied emotions) and their events out.

The stages are handed in, not built here, so the service, ``analyze`` and ``bench`` run the very
same code, and a test or a user's script can swap any of them. Stage times come back with every
frame because the Pi is where budgets are tight and ``stats`` should say which stage ate them.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from edge.config import Config
from edge.sources import Frame
from edge.vision.classifier import EmotionClassifier
from edge.vision.detector import Box, Detector, create_detector
from edge.vision.scan import Scanner
from edge.vision.tracker import START, FaceTracker, Track, TrackEvent, iou, likeness, thumbnail

# A followed face whose thumbnail correlates less than this with its look when last classified changed
# enough (a new expression, a turn) to be classified again before ``reclassify`` is due.
RELOOK = 0.9
# A missed face is held only while its box still shows nearly the same picture.
HOLD_LIKENESS = 0.8


@dataclass
class FrameResult:
    frame: Frame
    tracks: list[Track]  # the faces seen on this frame (tracks merely missing for a moment are left out)
    events: list[TrackEvent]
    timings_ms: dict[str, float]  # "detect", "classify", "track"
    # The classifier's own answer per box it classified on this frame, before the tracker smooths it
    # (`analyze --raw`); a followed face whose look did not change is not classified again (Pipeline).
    raw: dict[tuple[int, ...], np.ndarray] = dataclasses.field(default_factory=dict)


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    """The face at full resolution, without a margin: Haar's box frames a face much as FER-2013's crops
    do, and a margin or a tighter cut lowered accuracy when measured (docs/model.md). A face cut by the
    frame's left or right edge (its box narrower than tall there) is completed by its mirror image at that
    edge, as the detector found it: the classifier is shown a whole face, not half of one stretched."""
    x, y, w, h = box
    face = image[y : y + h, x : x + w]
    missing = h - w
    if missing > 0 and (x == 0 or x + w == image.shape[1]) and w > 0:
        left, right = (missing, 0) if x == 0 else (0, missing)
        face = cv2.copyMakeBorder(face, 0, 0, left, right, cv2.BORDER_REFLECT)
    return face


class Pipeline:
    """Detect (through the ``Scanner``), classify what needs it, track.

    Classification is bounded per frame: a face the tracker already follows is classified again only when
    its look changed (thumbnail correlation with its look when last classified below ``RELOOK``) or
    ``reclassify`` seconds after its last classification; all faces that need it go in one call. A followed
    face the detector missed is held where it was while its look is still there (``hold`` seconds at most
    since it was last detected): a Haar miss on a blurred frame is not a person leaving. A face whose look
    at its box is nearly what it was (likeness ``RELOOK``) is not even looked for: it is held the same way,
    so a face that keeps still costs a thumbnail, not a scan, until ``hold`` asks for a detection again
    (``reclassify`` 0, every face classified on every frame, looks for every face on every frame too)."""

    def __init__(
        self,
        detector: Detector,
        classifier: EmotionClassifier,
        tracker: FaceTracker,
        scanner: Scanner | None = None,
        *,
        reclassify: float = 0.0,
        hold: float = 0.0,
    ) -> None:
        self.detector = detector
        self.classifier = classifier
        self.tracker = tracker
        self.scanner = scanner or Scanner(detector)
        self.reclassify = reclassify
        self.hold = hold

    @classmethod
    def from_config(cls, config: Config | None = None) -> Pipeline:
        """Build the stages from the ``[detector]``, ``[classifier]`` and ``[tracker]`` sections (defaults if None).

        Raises DetectorError or ModelError, whose messages name the cascade or model at fault.
        """
        config = config or Config()
        d, c, t = config.detector, config.classifier, config.tracker
        detector = create_detector(
            d.type,
            cascade=d.cascade or None,
            scale_factor=d.scale_factor,
            min_neighbors=d.min_neighbors,
            min_size=d.min_size,
            detect_width=d.detect_width,
        )
        classifier = EmotionClassifier.load(c.model or None, backend=c.backend, num_threads=c.num_threads)
        tracker = FaceTracker(
            classifier.labels,
            smoothing=t.smoothing,
            hysteresis=t.hysteresis,
            max_missing=t.max_missing,
            iou_threshold=t.iou_threshold,
            min_hits=t.min_hits,
            appearance=t.appearance,
            steady=t.steady,
        )
        scanner = Scanner(
            detector,
            full_scan_interval=d.full_scan_interval,
            margin=d.region_margin,
            motion_threshold=d.motion_threshold,
        )
        return cls(detector, classifier, tracker, scanner, reclassify=t.reclassify, hold=t.hold)

    def process(self, frame: Frame) -> FrameResult:
        started = time.perf_counter()
        followed = self.tracker.followed
        # Where each confirmed face that may still be held was: its look there now, before any scan.
        looks = {
            id(t): thumbnail(crop(frame.image, t.box)) for t in followed if t.id and frame.ts - t.detected < self.hold
        }
        # One that kept its look needs neither a scan nor a classification (unless every face must be classified).
        still = [self.reclassify > 0 and id(t) in looks and likeness(t.thumb, looks[id(t)]) >= RELOOK for t in followed]
        boxes = self.scanner.scan(frame, [t.box for t in followed], still)
        detected = time.perf_counter()
        crops = [crop(frame.image, box) for box in boxes]
        thumbs = [thumbnail(face) for face in crops]
        owners = self.tracker.assign(boxes, thumbs)
        todo = [i for i, owner in enumerate(owners) if self._needs_classifying(owner, thumbs[i], frame.ts)]
        rows = self.classifier.predict([crops[i] for i in todo], reframe=False)
        probs: list[np.ndarray | None] = [None] * len(boxes)
        for i, row in zip(todo, rows):
            probs[i] = row
        classified = time.perf_counter()
        events = self.tracker.update(boxes, probs, frame.ts, thumbs)
        self._hold_missed(frame, owners, looks)
        tracked = time.perf_counter()
        # Snapshots: the tracker updates its Track objects in place on the next frame.
        seen = [dataclasses.replace(track) for track in self.tracker.tracks if track.last_seen == frame.ts]
        timings = {
            "detect": (detected - started) * 1000.0,
            "classify": (classified - detected) * 1000.0,
            "track": (tracked - classified) * 1000.0,
        }
        raw = {tuple(boxes[i]): row for i, row in zip(todo, rows)}
        return FrameResult(frame, seen, events, timings, raw)

    def _needs_classifying(self, owner: Track | None, thumb: np.ndarray, ts: float) -> bool:
        if owner is None or self.reclassify <= 0:
            return True
        return ts - owner.classified >= self.reclassify or likeness(owner.classified_look, thumb) < RELOOK

    def _hold_missed(self, frame: Frame, owners: list[Track | None], looks: dict[int, np.ndarray]) -> None:
        """Hold the confirmed faces no box went to whose look (``looks``, taken before the scan) is still there."""
        matched = {id(owner) for owner in owners if owner is not None}
        taken = [t.box for t in self.tracker.tracks if t.last_seen == frame.ts]
        for track in self.tracker.tracks:
            if id(track) in matched or id(track) not in looks:
                continue
            if any(iou(track.box, box) > 0.3 for box in taken):  # its face went to another track
                continue
            if likeness(track.thumb, looks[id(track)]) >= HOLD_LIKENESS:
                self.tracker.hold(track, frame.ts)
                taken.append(track.box)


class Backfill:
    """Per-frame results as if a confirmed face had counted from its first frame.

    The tracker starts a track only after ``min_hits`` sightings in a row, so a live view shows a face a
    frame late; an offline reader (``analyze``, ``bench --truth``) need not. It holds results back
    ``min_hits - 1`` frames and, when a track starts, adds it to the held frames it was seen on (where it
    was then, with the label it starts with). ``push`` returns the results that are complete; ``flush`` the rest.
    """

    def __init__(self, min_hits: int) -> None:
        self._delay = max(0, min_hits - 1)
        self._held: deque[FrameResult] = deque()

    def push(self, result: FrameResult) -> list[FrameResult]:
        started = {e.track for e in result.events if e.kind == START}
        for track in result.tracks:
            if track.id not in started:
                continue
            for held in self._held:
                box = dict(track.sightings).get(held.frame.ts)
                if box is not None and all(t.id != track.id for t in held.tracks):
                    held.tracks.append(dataclasses.replace(track, box=box, last_seen=held.frame.ts))
        self._held.append(result)
        done = []
        while len(self._held) > self._delay:
            done.append(self._held.popleft())
        return done

    def flush(self) -> list[FrameResult]:
        done, self._held = list(self._held), deque()
        return done
