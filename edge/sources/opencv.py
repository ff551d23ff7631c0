"""Sources OpenCV's VideoCapture reads: video files, RTSP/HTTP streams and V4L2 webcams.

Each opens eagerly and decodes its first frame at once, so a corrupt file, a dead URL or a
/dev/video node that is not a camera fails at open with a message naming it, not later mid-run.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edge.sources.base import Frame, SourceError

log = logging.getLogger(__name__)

# A stream that stops sending must not block the capture thread (and so a clean stop) forever.
STREAM_TIMEOUT_MS = 5000


def redact(url: str) -> str:
    """The URL with any password masked, so logs and errors never leak camera credentials."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


class _OpenCVSource:
    live = False

    def __init__(self, name: str, capture: cv2.VideoCapture, unreadable: str) -> None:
        self.name = name
        self._capture = capture
        self._index = 0
        ok, image = capture.read() if capture.isOpened() else (False, None)
        if not ok:
            capture.release()
            raise SourceError(f"{name}: {unreadable}")
        self._pending: np.ndarray | None = image
        self.fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)

    def _grab(self) -> np.ndarray | None:
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image
        ok, image = self._capture.read()
        return image if ok else None

    def _live_frame(self, lost: str) -> Frame:
        image = self._grab()
        if image is None:
            raise SourceError(f"{self.name}: {lost}")
        frame = Frame(image, None, self._index, time.monotonic())
        self._index += 1
        return frame

    def close(self) -> None:
        self._capture.release()


class VideoFileSource(_OpenCVSource):
    """A video file, read at decode speed (not real time): every frame, in order, then the end."""

    def __init__(self, path: str | Path, *, loop: bool = False) -> None:
        path = Path(path)
        if not path.is_file():
            raise SourceError(f"{path}: no such video file")
        super().__init__(str(path), cv2.VideoCapture(str(path)), "not a readable video (corrupt or unsupported codec)")
        self._loop = loop

    def read(self) -> Frame | None:
        image = self._grab()
        if image is None and self._loop and self._index > 0:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            image = self._grab()
        if image is None:
            return None
        # Position from the frame count, not CAP_PROP_POS_MSEC: it keeps growing across loops, so a
        # tracker never sees time run backwards, and it is exact for constant-rate files.
        ts = self._index / self.fps if self.fps > 0 else self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        frame = Frame(image, None, self._index, ts)
        self._index += 1
        return frame


class StreamSource(_OpenCVSource):
    """An RTSP/HTTP camera stream through FFmpeg; live, so losing it is an error the reader retries."""

    live = True

    def __init__(self, url: str) -> None:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
        super().__init__(redact(url), cv2.VideoCapture(url, cv2.CAP_FFMPEG, params), "cannot open the stream")

    def read(self) -> Frame:
        return self._live_frame("stream lost")


class WebcamSource(_OpenCVSource):
    """A USB webcam through V4L2, by index (0) or device path (/dev/video0)."""

    live = True

    def __init__(self, device: int | str, *, width: int = 640, height: int = 480, fps: float = 0) -> None:
        name = f"/dev/video{device}" if isinstance(device, int) else device
        if sys.platform.startswith("linux") and not Path(name).exists():
            raise SourceError(f"{name}: no such camera device")
        # V4L2 explicitly: with CAP_ANY OpenCV may pick GStreamer, which ignores the size requested.
        backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        capture = cv2.VideoCapture(device, backend)
        requests = {cv2.CAP_PROP_FRAME_WIDTH: width, cv2.CAP_PROP_FRAME_HEIGHT: height, cv2.CAP_PROP_FPS: fps}
        for prop, value in requests.items():
            if value:
                capture.set(prop, value)
        super().__init__(name, capture, "not a camera that delivers frames (busy, or a metadata node?)")
        got = self._pending.shape[1::-1]  # the first frame, read at open
        if tuple(got) != (width, height):
            log.info("%s: camera gives %dx%d instead of the %dx%d asked for", name, *got, width, height)

    def read(self) -> Frame:
        return self._live_frame("camera stopped delivering frames (unplugged?)")
