"""Pipeline: one frame in, the faces on it (tracked, with steadied emotions) and their events out.

The stages are handed in, not built here, so the service, ``analyze`` and ``bench`` run the very
same code, and a test or a user's script can swap any of them. Stage times come back with every
frame because the Pi is where budgets are tight and ``stats`` should say which stage ate them.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from edge.config import Config
from edge.sources import Frame
from edge.vision.classifier import EmotionClassifier
from edge.vision.detector import Box, Detector, create_detector
from edge.vision.tracker import FaceTracker, Track, TrackEvent


@dataclass
class FrameResult:
    frame: Frame
    tracks: list[Track]  # the faces seen on this frame (tracks merely missing for a moment are left out)
    events: list[TrackEvent]
    timings_ms: dict[str, float]  # "detect", "classify", "track"
    # The classifier's own answer per detected box, before the tracker smooths it (`analyze --raw`).
    raw: dict[tuple[int, ...], np.ndarray] = dataclasses.field(default_factory=dict)


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    """The face at full resolution, without a margin: Haar's box frames a face much as FER-2013's crops
    do, and a margin or a tighter cut lowered accuracy when measured (docs/model.md)."""
    x, y, w, h = box
    return image[y : y + h, x : x + w]


class Pipeline:
    def __init__(self, detector: Detector, classifier: EmotionClassifier, tracker: FaceTracker) -> None:
        self.detector = detector
        self.classifier = classifier
        self.tracker = tracker

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
        )
        return cls(detector, classifier, tracker)

    def process(self, frame: Frame) -> FrameResult:
        started = time.perf_counter()
        boxes = self.detector.detect(frame)
        detected = time.perf_counter()
        probs = self.classifier.predict([crop(frame.image, box) for box in boxes])
        classified = time.perf_counter()
        events = self.tracker.update(boxes, probs, frame.ts)
        tracked = time.perf_counter()
        # Snapshots: the tracker updates its Track objects in place on the next frame.
        seen = [dataclasses.replace(track) for track in self.tracker.tracks if track.last_seen == frame.ts]
        timings = {
            "detect": (detected - started) * 1000.0,
            "classify": (classified - detected) * 1000.0,
            "track": (tracked - classified) * 1000.0,
        }
        return FrameResult(frame, seen, events, timings, {tuple(box): p for box, p in zip(boxes, probs)})
