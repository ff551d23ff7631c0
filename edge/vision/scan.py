"""Scanner: decides where on each frame to look for faces, so detection finds more for less.

A full-frame Haar scan is the pipeline's dearest step, and at the 320 px it can afford it misses small and
blurred faces. But from one frame to the next, faces are where they just were, and a new one does not
appear out of nothing: the picture changes where it comes in. So (as Frigate does with motion regions):

- around every face being followed, the detector looks at full resolution in the face's box grown by
  ``margin`` (``detect_near``): a few hundred pixels, in more detail than the full scan has;
- where the picture changed outside the people being followed (a frame 1/8 the size, compared with the
  previous one: blocks whose mean moved by more than ``motion_threshold`` gray levels), each patch of change
  is scanned on its own, in more detail than a full scan (``RegionDetector.detect`` with a region); changes
  over most of the frame (a cut, the light) call a full scan;
- a full scan runs at the latest ``full_scan_interval`` seconds after the previous one, which finds what
  the change test cannot (a face that was missed while it stood still);
- a face being followed that a full scan missed is looked for near its box all the same;
- a followed face the caller holds by its look (``edge.pipeline``: its box still shows nearly the same
  picture) is not looked for at all: a face that keeps still costs no scan between full scans.

A detector that is no ``RegionDetector`` (or ``full_scan_interval`` 0) gets a full scan every frame, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edge.sources import Frame
from edge.vision.detector import Box, Detector, RegionDetector
from edge.vision.emotions import to_gray
from edge.vision.tracker import iou

MOTION_WIDTH = 80  # the change test's frame width: 8x8-pixel blocks at 640x480, which averages sensor noise away
CHANGE_MARGIN = 60  # px around changed blocks: a face that moved in is bigger than the few blocks that changed most
FULL_SHARE = 0.4  # a change over more of the frame than this is a scene change: scan it all
FULL: Box = (0, 0, -1, -1)  # _changed returns [FULL] for "scan everything"


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

    def scan(self, frame: Frame, followed: Sequence[Box], held: Sequence[bool] = ()) -> list[Box]:
        """Face boxes on ``frame``, given the boxes of the faces being followed (live and tentative tracks).

        A followed face marked ``held`` (the caller holds it where it is, by its look) is not looked for
        near its box; a full or changed-region scan may still find it."""
        regions = self._regions
        changed = self._changed(frame, followed)
        followed = [box for box, skip in zip(followed, [*held, *[False] * len(followed)]) if not skip]
        due = frame.ts - self._last_full >= self.full_scan_interval
        boxes: list[Box] = []
        if regions is None or self.full_scan_interval <= 0 or due or changed == [FULL]:
            self._last_full = frame.ts
            self.full_scans += 1
            boxes = self.detector.detect(frame)
        elif changed:
            self.region_scans += 1
            for region in changed:
                boxes = _merge(boxes, regions.detect(frame, region))
        followed = [box for box in followed if not any(iou(box, b) > 0.3 for b in boxes)]
        if regions is not None:
            for box in followed:
                boxes = _merge(boxes, regions.detect_near(frame, box, self.margin))
        return sorted(boxes)

    def _changed(self, frame: Frame, followed: Sequence[Box]) -> list[Box]:
        """Where the picture changed outside the followed people since the previous frame: one region per
        patch of changed blocks (its bounding box grown by ``CHANGE_MARGIN`` px, overlapping ones merged),
        none, or ``[FULL]`` when the regions cover most of the frame (or there is no previous frame)."""
        if self.motion_threshold <= 0:
            return []
        plane = to_gray(frame.gray if frame.gray is not None else frame.image)
        height = round(plane.shape[0] * MOTION_WIDTH / plane.shape[1])
        small = cv2.resize(plane, (MOTION_WIDTH, height), interpolation=cv2.INTER_AREA).astype(np.int16)
        previous, self._previous = self._previous, small
        if previous is None or previous.shape != small.shape:
            return [FULL]
        moved = np.abs(small - previous) > self.motion_threshold
        scale = MOTION_WIDTH / frame.image.shape[1]
        for x, y, w, h in followed:  # the person: a head and shoulders move with the face
            x0, x1 = int((x - w) * scale), int((x + 2 * w) * scale) + 1
            y0, y1 = int((y - h / 2) * scale), int((y + 3 * h) * scale) + 1
            moved[max(0, y0) : y1, max(0, x0) : x1] = False
        count, _, stats, _ = cv2.connectedComponentsWithStats(moved.astype(np.uint8), connectivity=8)
        if count <= 1:
            return []
        full_height, full_width = frame.image.shape[:2]
        regions: list[Box] = []
        for bx, by, bw, bh, _ in stats[1:]:
            x0, y0 = max(0, int(bx / scale) - CHANGE_MARGIN), max(0, int(by / scale) - CHANGE_MARGIN)
            x1 = min(full_width, int((bx + bw) / scale) + CHANGE_MARGIN)
            y1 = min(full_height, int((by + bh) / scale) + CHANGE_MARGIN)
            regions = _union(regions, (x0, y0, x1 - x0, y1 - y0))
        if sum(w * h for _, _, w, h in regions) > FULL_SHARE * full_width * full_height:
            return [FULL]
        return regions


def _union(regions: list[Box], new: Box) -> list[Box]:
    """``regions`` with ``new`` added, regions that overlap it merged into their bounding box."""
    while True:
        x, y, w, h = new
        overlapping = [r for r in regions if r[0] < x + w and x < r[0] + r[2] and r[1] < y + h and y < r[1] + r[3]]
        if not overlapping:
            return [*regions, new]
        regions = [r for r in regions if r not in overlapping]
        x0, y0 = min(x, *(r[0] for r in overlapping)), min(y, *(r[1] for r in overlapping))
        x1 = max(x + w, *(r[0] + r[2] for r in overlapping))
        y1 = max(y + h, *(r[1] + r[3] for r in overlapping))
        new = (x0, y0, x1 - x0, y1 - y0)


def _merge(boxes: list[Box], more: Sequence[Box]) -> list[Box]:
    """``boxes`` plus those of ``more`` that are not the same face again (regions of near faces overlap)."""
    out = list(boxes)
    for box in more:
        if not any(iou(box, b) > 0.3 for b in out):
            out.append(box)
    return out
