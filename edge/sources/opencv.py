"""Sources OpenCV's VideoCapture reads: video files, RTSP/HTTP streams and V4L2 webcams.

Each opens eagerly and decodes its first frame at once, so a corrupt file, a dead URL or a
/dev/video node that is not a camera fails at open with a message naming it, not later mid-run.
A file that goes bad later is told apart from one that ended: its container says how many frames
it has, so an undecodable frame is skipped (and said once) and a file that cannot be read on before
its last frame (truncated while playing) is a SourceError, not a quiet end.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

from edge.noise import quiet_opencv
from edge.sources.base import Frame, SourceError

log = logging.getLogger(__name__)
quiet_opencv()  # FFmpeg would print every damaged macroblock; the sources say once what matters

# A stream that stops sending must not block the capture thread (and so a clean stop) forever.
STREAM_TIMEOUT_MS = 5000
# Undecodable frames in a row after which a file counts as unreadable from there on (truncated).
MAX_BAD_FRAMES = 30


def redact(url: str) -> str:
    """The URL with any password masked, so logs and errors never leak camera credentials."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def _check_url(url: str) -> None:
    """SourceError for a URL no retry can open (no host, a port that is not a number), before FFmpeg
    would spend its open timeout on it and the service would wait for it for ever."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- parsing the port is the check: ValueError when it is not one
    except ValueError as exc:
        raise SourceError(f"{redact(url)}: not a valid URL ({exc})") from None
    if not parts.netloc:
        raise SourceError(f"{redact(url)}: not a valid URL (no host)")


class _OpenCVSource:
    live = False

    def __init__(self, name: str, capture: cv2.VideoCapture, unreadable: str) -> None:
        self.name = name
        self._capture = capture
        self._index = 0
        ok, image = capture.read() if capture.isOpened() else (False, None)
        if not ok or image is None:
            capture.release()
            raise SourceError(f"{name}: {unreadable}", transient=self.live)  # a camera may be busy or not up yet
        self.size = (image.shape[1], image.shape[0])  # (width, height) of the first frame, read at open
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
        self._count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)  # 0 when the container does not say
        self._position = 0  # frames of this pass consumed, read or skipped
        self.skipped = 0
        self._pass_start = 0.0  # without a rate: where this pass's clock starts, after the passes before it
        self._last_ts = 0.0

    def read(self) -> Frame | None:
        image = self._next_image()
        if image is None and self._loop and self._index > 0:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._position = 0
            # The next pass starts one mean frame interval after this one's last frame.
            self._pass_start = self._last_ts + self._last_ts / max(1, self._index - 1)
            image = self._next_image()
        if image is None:
            return None
        # Position from the frame count, not CAP_PROP_POS_MSEC: it keeps growing across loops, so a
        # tracker never sees time run backwards, and it is exact for constant-rate files. Without a rate
        # the decoder's clock, which starts again at each pass.
        if self.fps > 0:
            ts = self._index / self.fps
        else:
            ts = self._pass_start + self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        self._last_ts = ts
        frame = Frame(image, None, self._index, ts)
        self._index += 1
        return frame

    def _next_image(self) -> np.ndarray | None:
        """The next decodable frame of this pass; None at its end; SourceError when it cannot be read on."""
        for bad in range(MAX_BAD_FRAMES + 1):
            image = self._grab()
            self._position += 1
            if image is not None:
                if bad and self.skipped == bad:  # the first undecodable frames, now known to be skippable
                    log.warning("%s: %d undecodable frames skipped before frame %d", self.name, bad, self._index)
                return image
            if self._position > self._count:
                return None
            self._index += 1  # the gap in the frame numbers is the skipped frame
            self.skipped += 1
        raise SourceError(f"{self.name}: unreadable from frame {self._index - MAX_BAD_FRAMES - 1} of {self._count} on "
                          "(truncated or corrupt)")  # fmt: skip


class StreamSource(_OpenCVSource):
    """An RTSP/HTTP camera stream through FFmpeg; live, so losing it is an error the reader retries."""

    live = True

    def __init__(self, url: str) -> None:
        _check_url(url)
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
            raise SourceError(f"{name}: no such camera device", transient=True)  # not plugged in (yet)
        # V4L2 explicitly: with CAP_ANY OpenCV may pick GStreamer, which ignores the size requested.
        backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        capture = cv2.VideoCapture(device, backend)
        requests = {cv2.CAP_PROP_FRAME_WIDTH: width, cv2.CAP_PROP_FRAME_HEIGHT: height, cv2.CAP_PROP_FPS: fps}
        for prop, value in requests.items():
            if value:
                capture.set(prop, value)
        super().__init__(name, capture, "not a camera that delivers frames (busy, or a metadata node?)")
        if self.size != (width, height):
            log.info("%s: camera gives %dx%d instead of the %dx%d asked for", name, *self.size, width, height)

    def read(self) -> Frame:
        return self._live_frame("camera stopped delivering frames (unplugged?)")
