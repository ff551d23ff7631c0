"""Scanner: decides where on each frame to look for faces, so detection finds more for less.

A full-frame Haar scan is the pipeline's dearest step, and at the 320 px it can afford it misses small and
blurred faces. But from one frame to the next, faces are where they just were, and a new one does not
appear out of nothing: the picture changes where it comes in. So (as Frigate does with motion regions):

- around every face being followed, the detector looks at full resolution in the face's box grown by
  ``margin`` (``detect_near``): a few hundred pixels, in more detail than the full scan has;
- where the picture changed outside the people being followed (a frame 1/8 the size, compared with the
  previous one: blocks whose mean moved by more than ``motion_threshold`` gray levels), that region is
  scanned as a full scan would; a change over most of the frame (a cut, the light) calls a full scan;
- a full scan runs at the latest ``full_scan_interval`` seconds after the previous one, which finds what
  the change test cannot (a face that was missed while it stood still);
- a face being followed that a full scan missed is looked for near its box all the same;
- a followed face in whose region nothing moved is not looked for again at all when the caller can hold it
  by its look (``edge.pipeline``'s ``hold``): a face that sits still costs nothing between full scans.

A detector that is no ``RegionDetector`` (or ``full_scan_interval`` 0) gets a full scan every frame, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edge.sources import Frame
from edge.vision.detector import Box, Detector, RegionDetector, grow
from edge.vision.emotions import to_gray
from edge.vision.tracker import iou

MOTION_WIDTH = 80  # the change test's frame width: 8x8-pixel blocks at 640x480, which averages sensor noise away
CHANGE_MARGIN = 60  # px around changed blocks: a face that moved in is bigger than the few blocks that changed most
FULL_SHARE = 0.4  # a change over more of the frame than this is a scene change: scan it all
FULL: Box = (0, 0, -1, -1)  # what _changed returns for "scan everything"


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
        # A detector that can scan part of a frame and look near a known face; others get full scans only.
        self._regions = detector if isinstance(detector, RegionDetector) else None
        self.full_scan_interval = full_scan_interval
        self.margin = margin
        self.motion_threshold = motion_threshold
        self.full_scans = 0  # how many frames got a full scan, and a scan of a changed region: bench reports them
        self.region_scans = 0
        self._last_full = -np.inf
        self._previous: np.ndarray | None = None
        self._moved: np.ndarray | None = None  # the blocks that changed since the previous frame

    def _moved_near(self, box: Box, frame: Frame) -> bool:
        """Whether anything changed in ``box``'s region (True when unknown)."""
        if self._moved is None:
            return True
        scale = MOTION_WIDTH / frame.image.shape[1]
        x, y, w, h = grow(box, self.margin, frame.image.shape[1], frame.image.shape[0])
        return bool(
            self._moved[int(y * scale) : int((y + h) * scale) + 1, int(x * scale) : int((x + w) * scale) + 1].any()
        )

    def scan(self, frame: Frame, followed: Sequence[Box], skippable: Sequence[bool] = ()) -> list[Box]:
        """Face boxes on ``frame``, given the boxes of the faces being followed (live and tentative tracks).

        A followed face marked ``skippable`` (the caller can hold it where it is by its look) is not looked
        for again while nothing moved in its region: a face that sits still costs nothing between scans."""
        regions = self._regions
        changed = self._changed(frame, followed)
        quiet = [skip and not self._moved_near(box, frame) for box, skip in zip(followed, skippable)]
        followed = [box for box, q in zip(followed, [*quiet, *[False] * len(followed)]) if not q]
        due = frame.ts - self._last_full >= self.full_scan_interval
        boxes: list[Box] = []
        if regions is None or self.full_scan_interval <= 0 or due or changed == FULL:
            self._last_full = frame.ts
            self.full_scans += 1
            boxes = self.detector.detect(frame)
        elif changed is not None:
            self.region_scans += 1
            boxes = regions.detect(frame, changed)
        followed = [box for box in followed if not any(iou(box, b) > 0.3 for b in boxes)]
        if regions is not None:
            for box in followed:
                boxes = _merge(boxes, regions.detect_near(frame, box, self.margin))
        return sorted(boxes)

    def _changed(self, frame: Frame, followed: Sequence[Box]) -> Box | None:
        """Where the picture changed outside the followed people since the previous frame: None, the
        changed blocks' bounding box grown by ``CHANGE_MARGIN`` px, or ``FULL`` when that is most of the frame."""
        if self.motion_threshold <= 0:
            self._moved = None
            return None
        plane = to_gray(frame.gray if frame.gray is not None else frame.image)
        height = round(plane.shape[0] * MOTION_WIDTH / plane.shape[1])
        small = cv2.resize(plane, (MOTION_WIDTH, height), interpolation=cv2.INTER_AREA).astype(np.int16)
        previous, self._previous = self._previous, small
        if previous is None or previous.shape != small.shape:
            self._moved = None
            return FULL
        moved = np.abs(small - previous) > self.motion_threshold
        self._moved = moved.copy()
        scale = MOTION_WIDTH / frame.image.shape[1]
        for x, y, w, h in followed:  # the person: a head and shoulders move with the face
            x0, x1 = int((x - w) * scale), int((x + 2 * w) * scale) + 1
            y0, y1 = int((y - h / 2) * scale), int((y + 3 * h) * scale) + 1
            moved[max(0, y0) : y1, max(0, x0) : x1] = False
        ys, xs = np.nonzero(moved)
        if len(xs) == 0:
            return None
        full_height, full_width = frame.image.shape[:2]
        x0, y0 = max(0, int(xs.min() / scale) - CHANGE_MARGIN), max(0, int(ys.min() / scale) - CHANGE_MARGIN)
        x1 = min(full_width, int((xs.max() + 1) / scale) + CHANGE_MARGIN)
        y1 = min(full_height, int((ys.max() + 1) / scale) + CHANGE_MARGIN)
        if (x1 - x0) * (y1 - y0) > FULL_SHARE * full_width * full_height:
            return FULL
        return x0, y0, x1 - x0, y1 - y0


def _merge(boxes: list[Box], more: Sequence[Box]) -> list[Box]:
    """``boxes`` plus those of ``more`` that are not the same face again (regions of near faces overlap)."""
    out = list(boxes)
    for box in more:
        if not any(iou(box, b) > 0.3 for b in out):
            out.append(box)
    return out
