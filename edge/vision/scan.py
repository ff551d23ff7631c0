"""Scanner: decides where on each frame to look for faces, so detection finds more for less.

A full-frame Haar scan is the pipeline's dearest step, and at the 320 px it can afford it misses small and
blurred faces. But from one frame to the next, faces are where they just were, and a new one does not
appear out of nothing: the picture changes where it comes in. So (as Frigate does with motion regions):

- around every face being followed, the detector looks at full resolution in the face's box grown by
  ``margin`` (``detect_near``): a few hundred pixels, in more detail than the full scan has;
- a full-frame scan runs when the picture changed outside those regions (a frame 1/8 the size, compared
  with the previous one: a block whose mean moved by more than ``motion_threshold`` gray levels), and at
  the latest ``full_scan_interval`` seconds after the previous one, which finds what the change test
  cannot (a face that was missed while it stood still);
- a face being followed that a full scan missed is looked for near its box all the same.

A detector without ``detect_near`` (or ``full_scan_interval`` 0) gets a full scan every frame, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edge.sources import Frame
from edge.vision.detector import Box, Detector, grow
from edge.vision.emotions import to_gray
from edge.vision.tracker import iou

MOTION_WIDTH = 80  # the change test's frame width: 8x8-pixel blocks at 640x480, which averages sensor noise away


class Scanner:
    def __init__(
        self,
        detector: Detector,
        *,
        full_scan_interval: float = 0.0,
        margin: float = 0.5,
        motion_threshold: float = 0.0,
    ) -> None:
        self.detector = detector
        self.full_scan_interval = full_scan_interval
        self.margin = margin
        self.motion_threshold = motion_threshold
        self.full_scans = 0  # how many frames got a full scan: bench reports the share
        self._last_full = -np.inf
        self._previous: np.ndarray | None = None

    def scan(self, frame: Frame, followed: Sequence[Box]) -> list[Box]:
        """Face boxes on ``frame``, given the boxes of the faces being followed (live and tentative tracks)."""
        near = getattr(self.detector, "detect_near", None)
        changed = self._changed(frame, followed)
        due = frame.ts - self._last_full >= self.full_scan_interval
        if near is None or self.full_scan_interval <= 0 or due or changed:
            self._last_full = frame.ts
            self.full_scans += 1
            boxes = self.detector.detect(frame)
            followed = [box for box in followed if not any(iou(box, b) > 0.3 for b in boxes)]
        else:
            boxes = []
        if near is not None:
            for box in followed:
                boxes = _merge(boxes, near(frame, box, self.margin))
        return sorted(boxes)

    def _changed(self, frame: Frame, followed: Sequence[Box]) -> bool:
        """Whether the picture changed outside the followed faces' regions since the previous frame."""
        if self.motion_threshold <= 0:
            return False
        plane = to_gray(frame.gray if frame.gray is not None else frame.image)
        height = round(plane.shape[0] * MOTION_WIDTH / plane.shape[1])
        small = cv2.resize(plane, (MOTION_WIDTH, height), interpolation=cv2.INTER_AREA).astype(np.int16)
        previous, self._previous = self._previous, small
        if previous is None or previous.shape != small.shape:
            return True
        moved = np.abs(small - previous) > self.motion_threshold
        scale = MOTION_WIDTH / frame.image.shape[1]
        for box in followed:
            x, y, w, h = grow(box, self.margin, frame.image.shape[1], frame.image.shape[0])
            moved[int(y * scale) : int((y + h) * scale) + 1, int(x * scale) : int((x + w) * scale) + 1] = False
        return bool(moved.any())


def _merge(boxes: list[Box], more: Sequence[Box]) -> list[Box]:
    """``boxes`` plus those of ``more`` that are not the same face again (regions of near faces overlap)."""
    out = list(boxes)
    for box in more:
        if not any(iou(box, b) > 0.3 for b in out):
            out.append(box)
    return out
