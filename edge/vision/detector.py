"""Face detectors: a frame in, face boxes (x, y, w, h in full-resolution pixels) out.

One class per backend, picked by the config's ``type`` key through ``DETECTORS`` (the pattern of
Frigate's detector plugins), so another backend is one class and one registry line. Only OpenCV's
Haar cascade exists now: it needs nothing beyond OpenCV and runs in real time on a Pi's CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from edge.sources import Frame
from edge.vision.emotions import to_gray

Box = tuple[int, int, int, int]

# alt2 over "default": on the bundled clip at scale_factor 1.2 it found 204 of the 205 faces, "default" 180,
# neither with a false positive, at about the same cost.
DEFAULT_CASCADE = "haarcascade_frontalface_alt2.xml"
# Debian/Raspberry Pi OS's opencv-data package, for OpenCV builds without cv2.data (python3-opencv).
DEBIAN_CASCADES = Path("/usr/share/opencv4/haarcascades")
# A region scan shrinks a tracked face to this width (never enlarging): twice the cascade's 20 px window
# keeps its detail, and the region is then a few hundred pixels. Its pyramid steps are finer than a full
# scan's since there are few of them.
NEAR_FACE = 48
NEAR_SCALE_FACTOR = 1.1
NEAR_SIZES = (0.7, 1.4)  # the sizes looked for, as fractions of the face's last box
# Its boxes come out larger than a full scan's around the same face (docs/pipeline.md), and a looser crop
# is classified worse (docs/model.md): so they are shrunk to frame the face as a full scan does.
NEAR_BOX_SHRINK = 0.967
# A changed region (a face coming in) is small: it is scanned at up to this many times ``detect_width``, in
# NEAR_SCALE_FACTOR steps, which finds the small and blurred faces a full scan misses.
REGION_DETAIL = 2.0
# A face cut by the frame's left or right edge is no face to a cascade; mirrored at that edge it is nearly
# one again, since faces are left-right symmetric. So a scan touching either edge sees it mirrored outward by
# EDGE_PAD of the frame's height (half a large face; half the face for a scan near one), and keeps a face
# across the edge when at least EDGE_MIN_INSIDE of it is inside and the cascade found it twice as firmly as a
# face inside (its ``min_neighbors`` doubled): mirrored background makes symmetric patterns of its own.
EDGE_PAD = 0.2
EDGE_MIN_INSIDE = 0.35


class DetectorError(RuntimeError):
    """A detector that cannot be set up (unknown type, missing or unloadable cascade); names the cause."""


class Detector(Protocol):
    def detect(self, frame: Frame) -> list[Box]: ...


@runtime_checkable
class RegionDetector(Detector, Protocol):
    """A detector that can also scan part of a frame, and look for one face of about a known size near a
    known place at full resolution: what ``edge.vision.scan.Scanner`` asks for between full-frame scans."""

    min_size: int  # the smallest face it finds, in full-resolution pixels

    def detect(self, frame: Frame, region: Box | None = None) -> list[Box]: ...

    def detect_near(
        self, frame: Frame, box: Box, margin: float, *, sizes: tuple[float, float] = ..., detail: int = ...
    ) -> list[Box]: ...


def grow(box: Box, margin: float, width: int, height: int) -> Box:
    """``box`` grown by ``margin`` of its width on every side, clipped to the frame."""
    x, y, w, h = box
    dx, dy = round(w * margin), round(h * margin)
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def find_cascade(cascade: str | None = None) -> Path:
    """The cascade file: ``cascade`` as a path, or as a name looked up where OpenCV installs ship them."""
    if cascade and (Path(cascade).is_file() or "/" in cascade):
        if not Path(cascade).is_file():
            raise DetectorError(f"{cascade}: Haar cascade file not found")
        return Path(cascade)
    name = cascade or DEFAULT_CASCADE
    folders = [Path(cv2.data.haarcascades)] if hasattr(cv2, "data") else []
    folders.append(DEBIAN_CASCADES)
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    searched = ", ".join(str(f) for f in folders)
    raise DetectorError(f"Haar cascade {name} not found in {searched} (install opencv-data, or set detector.cascade)")


class HaarDetector:
    """OpenCV's Viola-Jones cascade on a downscaled gray frame.

    Detection cost grows with the pixel count, and a face big enough to classify (48 px, the
    model's input, at 640x480) is still 24 px at half that width, above the cascade's 20 px window;
    so the frame is shrunk to ``detect_width`` first (or the source's own gray plane is used) and
    the boxes are scaled back. ``min_size`` is in full-resolution pixels, so it means the same
    whatever ``detect_width`` is.
    """

    type = "haar"

    def __init__(
        self,
        cascade: str | None = None,
        scale_factor: float = 1.2,
        min_neighbors: int = 3,
        min_size: int = 40,
        detect_width: int = 320,
    ) -> None:
        path = find_cascade(cascade)
        self._cascade = cv2.CascadeClassifier()
        try:
            # load() rather than the constructor: it reports failure instead of leaving an empty classifier.
            loaded = self._cascade.load(str(path))
        except cv2.error:  # malformed XML raises instead of returning False
            loaded = False
        if not loaded:
            raise DetectorError(f"{path}: not a loadable Haar cascade")
        self.cascade = path
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.detect_width = detect_width

    def detect(self, frame: Frame, region: Box | None = None) -> list[Box]:
        """Faces on the frame, or only within ``region`` (full-resolution pixels) in more detail: a region is
        small, so it is scanned at up to ``REGION_DETAIL`` times ``detect_width`` in finer pyramid steps."""
        height, width = frame.image.shape[:2]
        if region is None:
            x0 = y0 = 0
            plane = frame.gray if frame.gray is not None else frame.image
            target, factor = self.detect_width, self.scale_factor
        else:
            x0, y0, w, h = region
            plane = frame.image[y0 : y0 + h, x0 : x0 + w]
            target, factor = round(w * REGION_DETAIL * self.detect_width / width), NEAR_SCALE_FACTOR
        if plane.shape[1] > target > 0:
            scaled_height = max(1, round(plane.shape[0] * target / plane.shape[1]))
            plane = cv2.resize(plane, (target, scaled_height), interpolation=cv2.INTER_AREA)
        gray = to_gray(plane)
        span = width if region is None else region[2]
        scale = span / gray.shape[1]  # full-resolution pixels per scan pixel
        min_size = max(1, round(self.min_size / scale))
        at_edges = (x0 == 0, x0 + span >= width)
        found = self._scan(gray, at_edges, round(EDGE_PAD * height / scale), factor, (min_size, min_size))
        # OpenCV's multithreaded cascade lists faces in an order that can change from call to call;
        # left to right makes results repeatable and gives faces arriving together ids in that order.
        return sorted(_to_frame(found, scale, x0, y0, width, height))

    def _scan(
        self,
        gray: np.ndarray,
        at_edges: tuple[bool, bool],
        pad: int,
        scale_factor: float,
        min_size: tuple[int, int],
        max_size: tuple[int, int] = (0, 0),
    ) -> np.ndarray:
        """Boxes (x, y, w, h) on ``gray``, with those across an edge of the frame it touches (``at_edges``:
        left, right): that side is mirrored outward by ``pad`` px first (EDGE_PAD), such boxes clipped to ``gray``."""
        left, right = (pad if at_edges[0] else 0), (pad if at_edges[1] else 0)
        if left or right:
            gray = cv2.copyMakeBorder(gray, 0, 0, left, right, cv2.BORDER_REFLECT)
        found, neighbors = self._cascade.detectMultiScale2(
            gray, scale_factor, self.min_neighbors, minSize=min_size, maxSize=max_size
        )
        inner = gray.shape[1] - right
        boxes = []
        for (x, y, w, h), firmness in zip(np.asarray(found).reshape(-1, 4), np.asarray(neighbors).ravel()):
            x0, x1 = max(left, x), min(inner, x + w)
            if (x0, x1) != (x, x + w) and ((x1 - x0) < EDGE_MIN_INSIDE * w or firmness < 2 * self.min_neighbors):
                continue
            boxes.append((x0 - left, y, x1 - x0, h))
        return np.asarray(boxes, dtype=int).reshape(-1, 4)

    def detect_near(
        self,
        frame: Frame,
        box: Box,
        margin: float = 0.5,
        *,
        sizes: tuple[float, float] = NEAR_SIZES,
        detail: int = NEAR_FACE,
    ) -> list[Box]:
        """Faces of ``sizes`` times ``box``'s size within ``box`` grown by ``margin``: the region is cut from the
        full-resolution image and scaled so a face of ``box``'s size is ``detail`` px, a few pyramid steps of a
        small picture. So a tracked face is looked for in more detail than a downscaled full scan gives, for a
        fraction of its cost (docs/pipeline.md)."""
        height, width = frame.image.shape[:2]
        size = max(box[2], box[3])  # a face cut by the frame's edge is as tall as it is wide
        x, y, w, h = grow((box[0], box[1], size, size), margin, width, height)
        if w < 2 or h < 2:
            return []
        scale = max(1.0, size / detail)  # full-resolution pixels per scan pixel; never enlarge
        region = to_gray(frame.image[y : y + h, x : x + w])
        if scale > 1.0:
            region = cv2.resize(
                region, (max(1, round(w / scale)), max(1, round(h / scale))), interpolation=cv2.INTER_AREA
            )
        face = size / scale
        smallest = max(round(sizes[0] * face), round(self.min_size / scale), 1)
        largest = max(smallest + 1, round(sizes[1] * face))
        at_edges = (x == 0, x + w == width)
        found = self._scan(
            region, at_edges, round(face / 2), NEAR_SCALE_FACTOR, (smallest, smallest), (largest, largest)
        )
        return sorted(_shrink(b, NEAR_BOX_SHRINK, width) for b in _to_frame(found, scale, x, y, width, height))


def _shrink(box: Box, factor: float, width: int) -> Box:
    """``box`` scaled by ``factor`` about its centre; a side on the frame's left or right edge (a face cut
    by it, ``width`` wide) stays there."""
    x, y, w, h = box
    nw, nh = round(w * factor), round(h * factor)
    x0 = 0 if x == 0 else x + (w - nw) // 2
    x1 = width if x + w == width else x + (w - nw) // 2 + nw
    return x0, y + (h - nh) // 2, x1 - x0, nh


def _to_frame(found: Any, scale: float, x: int, y: int, width: int, height: int) -> list[Box]:
    """Boxes from a scan of a plane ``scale`` times smaller than the frame whose origin is at (x, y)."""
    boxes = []
    for fx, fy, fw, fh in np.asarray(found).reshape(-1, 4):
        x0, y0 = max(0, x + round(fx * scale)), max(0, y + round(fy * scale))
        x1, y1 = min(width, x + round((fx + fw) * scale)), min(height, y + round((fy + fh) * scale))
        boxes.append((x0, y0, x1 - x0, y1 - y0))
    return boxes


DETECTORS: dict[str, Callable[..., Detector]] = {HaarDetector.type: HaarDetector}


def create_detector(type: str = "haar", **options: Any) -> Detector:
    """The detector the config's ``[detector]`` section describes; DetectorError for an unknown type."""
    try:
        cls = DETECTORS[type]
    except KeyError:
        raise DetectorError(f"unknown detector.type {type!r}; available: {', '.join(DETECTORS)}") from None
    return cls(**options)
