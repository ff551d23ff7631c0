"""Reframer: a face crop in, the same face framed as the pipeline's detector frames it out.

Why: the model learnt faces framed as FER-2013 frames them, which is about how a Haar box frames them
(docs/model.md). A crop cut wider, by another face detector or by hand, shows the face smaller among hair,
collar and background, and is classified far worse (the robustness report's "cut 20% wider" row). Finding
the face again inside the crop and cutting it out as a full-frame scan would gives the model the framing it
learnt. The pipeline's own crops are cut by the detector's boxes already and skip this.

A crop is given back as it is when it frames its face that way already, when it is too small for a face the
detector can find (``min_size`` and up) to be cut out of it, as FER-2013's 48 px crops are, or when no face is
found in it (a profile, a hand over the face): then the model sees what the caller gave it.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from edge.sources import Frame
from edge.vision.detector import Box, DetectorError, HaarDetector, RegionDetector
from edge.vision.emotions import to_gray

log = logging.getLogger(__name__)

# The face sizes looked for, as shares of the crop's longer side: from a crop framed as Haar frames a face to
# one cut about 60% wider on every side.
SIZES = (0.45, 1.05)
# The face is looked for at about this many pixels: twice the detector's near-face detail, since a loose
# crop's face is smaller than the crop the scan is scaled by.
DETAIL = 96
# A region scan's box comes out smaller than a full scan's around the same face; the box is grown by this much
# about its centre, which frames the face a little tighter than a full scan does: loose crops were classified
# best so, without costing crops that were tight already (docs/python.md).
GROW = 1.15
# A reframed side at least this share of the crop's: the crop frames the face already and is kept whole.
KEEP = 0.88


class Reframer:
    """Cuts each crop down to its face as found by ``detector`` (a region-capable one: it looks for a face of
    about a known size in a known place, here the crop itself)."""

    def __init__(self, detector: RegionDetector) -> None:
        self.detector = detector

    def box(self, face: np.ndarray) -> Box | None:
        """The face's new box within ``face`` (x, y, w, h), or None to keep the crop as it is."""
        gray = to_gray(face)
        height, width = gray.shape
        side = max(height, width)
        if GROW * self.detector.min_size >= KEEP * side:  # no face it could find would be cut out: don't look
            return None
        found = self.detector.detect_near(
            Frame(gray, gray, 0, 0.0), (0, 0, width, height), 0.0, sizes=SIZES, detail=DETAIL
        )
        if not found:
            return None

        def centred_and_large(b: Box) -> float:  # the crop is of one face: a large one near its middle
            return b[2] - 0.5 * float(np.hypot(b[0] + b[2] / 2 - width / 2, b[1] + b[3] / 2 - height / 2))

        x, y, w, h = max(found, key=centred_and_large)
        half = GROW * max(w, h) / 2
        if 2 * half >= KEEP * side:
            return None
        cx, cy = x + w / 2, y + h / 2
        x0, y0 = max(0, round(cx - half)), max(0, round(cy - half))
        x1, y1 = min(width, round(cx + half)), min(height, round(cy + half))
        return x0, y0, x1 - x0, y1 - y0

    def __call__(self, face: np.ndarray) -> np.ndarray:
        """``face`` cut to its new box, or ``face`` itself when :meth:`box` keeps it."""
        box = self.box(face)
        if box is None:
            return face
        x, y, w, h = box
        return face[y : y + h, x : x + w]


@functools.cache
def default_reframer() -> Reframer | None:
    """The reframer over the pipeline's default detector, made once (it loads a Haar cascade); None, said once
    in the log, where no cascade is installed: crops are then used as given."""
    try:
        return Reframer(HaarDetector())
    except DetectorError as exc:
        log.warning("face crops are used as given, not reframed: %s", exc)
        return None
