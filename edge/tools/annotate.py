"""Drawing faces, ids and emotions onto frames, and writing the result as a video or as images.

Used by ``emotion-edge analyze --annotate`` so a user can see what the numbers in the JSON refer
to. Annotation happens on a copy: frames belong to the source and may be reused (a looped image).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge.sources import FolderSource, Frame, FrameSource, ImageSource
from edge.sources.images import IMAGE_SUFFIXES
from edge.tools.outputs import OutputError, check_not_an_input, check_output
from edge.vision.tracker import Track

# One colour per emotion (BGR), in EMOTIONS order; unknown labels from a custom model get gray.
COLOURS = {
    "angry": (40, 40, 220),
    "disgust": (40, 140, 40),
    "fear": (160, 60, 160),
    "happy": (40, 200, 240),
    "sad": (200, 120, 40),
    "surprise": (240, 200, 40),
    "neutral": (200, 200, 200),
}
VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "MJPG"}


def draw(image: np.ndarray, tracks: list[Track]) -> np.ndarray:
    """A copy of ``image`` with each track's box and a "#id emotion 87%" label above it."""
    out = image.copy()
    scale = max(0.5, out.shape[1] / 1280)  # text and lines grow with the picture, stay legible on small ones
    thickness = max(1, round(scale * 2))
    for track in tracks:
        x, y, w, h = track.box
        colour = COLOURS.get(track.emotion, (160, 160, 160))
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, thickness + 1)
        label = f"#{track.id} {track.emotion} {track.confidence:.0%}"
        (tw, th), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = y - th - baseline - 4 if y - th - baseline - 4 >= 0 else y + h  # below the box at the top edge
        cv2.rectangle(out, (x, top), (x + tw + 4, top + th + baseline + 4), colour, cv2.FILLED)
        cv2.putText(
            out, label, (x + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA
        )
    return out


class FrameWriter(Protocol):
    def write(self, frame: Frame, image: np.ndarray) -> None: ...

    def close(self, *, complete: bool = True) -> None: ...


class VideoWriter:
    """A video at the source's rate; the codec follows the file name (.avi MJPG, .mp4 MPEG-4 part 2),
    both of which every OpenCV build with FFmpeg can write and play back. It is written beside its name
    and moved there when complete: a run that fails halfway leaves a file of that name as it was."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = check_output(path, tuple(VIDEO_CODECS))
        self._partial = path.with_name(f".{path.stem}.partial{path.suffix}")  # the suffix picks the container
        self._fourcc = cv2.VideoWriter.fourcc(*VIDEO_CODECS[path.suffix.lower()])
        self._fps = fps if fps > 0 else 15.0
        self._writer: cv2.VideoWriter | None = None

    def write(self, frame: Frame, image: np.ndarray) -> None:
        if self._writer is None:  # the size is known only from the first frame
            height, width = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self._partial), self._fourcc, self._fps, (width, height))
            if not self._writer.isOpened():
                raise OutputError(f"{self.path}: cannot write video")
        self._writer.write(image)

    def close(self, *, complete: bool = True) -> None:
        """Release the video; in place when ``complete``, else removed."""
        if self._writer is None:
            return
        self._writer.release()
        try:
            if complete:
                self._partial.replace(self.path)
            else:
                self._partial.unlink(missing_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write video ({exc.strerror})") from None


class ImageWriter:
    """Stills: into a folder under their source names, or one image straight to an image path; never over
    the images being analysed (``--annotate`` naming the input folder)."""

    def __init__(self, out: Path, paths: list[Path]) -> None:
        self._paths = paths
        self._file = out if len(paths) == 1 and out.suffix.lower() in IMAGE_SUFFIXES else None
        self._out = out
        if out.suffix.lower() in VIDEO_CODECS:
            raise OutputError(f"{out}: a video's name, for stills: name an image file or a folder")
        check_not_an_input([self._target(p) for p in paths], paths)
        if self._file:
            check_output(self._file)
            return
        try:  # a folder of annotated copies is made, as `cp -r` would
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{out}: cannot create folder ({exc.strerror})") from None

    def _target(self, source: Path) -> Path:
        if self._file:
            return self._file
        # a photo under a video's name (holiday.mp4) is written as the JPEG it can be
        return self._out / (source.name if source.suffix.lower() in IMAGE_SUFFIXES else f"{source.stem}.jpg")

    def write(self, frame: Frame, image: np.ndarray) -> None:
        path = self._target(self._paths[frame.index % len(self._paths)])
        try:
            written = cv2.imwrite(str(path), image)
        except cv2.error:  # OpenCV raises, rather than returns False, for a suffix it has no writer for
            written = False
        if not written:
            raise OutputError(f"{path}: cannot write image")

    def close(self, *, complete: bool = True) -> None:
        """Every image is complete once written."""


def open_writer(out: str | Path, source: FrameSource) -> FrameWriter:
    """Images for image and folder sources, a video for everything else."""
    out = Path(out)
    if isinstance(source, (ImageSource, FolderSource)):
        return ImageWriter(out, source.paths)
    return VideoWriter(out, source.fps)
