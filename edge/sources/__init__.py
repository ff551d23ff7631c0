"""Frame sources: one small class per kind of input, chosen by ``open_source(spec)``.

``spec`` is what a user types after ``--source``: ``auto``, ``picamera2``, a webcam index (``0``)
or device (``/dev/video0``), an ``rtsp://``/``http(s)://`` URL, or a path to a video, an image or
a folder of images. Wrap a live source in :class:`LatestFrameReader` to run capture in its own
thread (newest frame only, reconnect with backoff).
"""

from __future__ import annotations

import glob
import os
import re
import stat
from pathlib import Path
from typing import Any

import cv2

from edge.sources.base import Frame, FrameSource, SourceError
from edge.sources.images import IMAGE_SUFFIXES, FolderSource, ImageSource
from edge.sources.opencv import StreamSource, VideoFileSource, WebcamSource, redact
from edge.sources.picamera import Picamera2Source
from edge.sources.reader import LatestFrameReader

__all__ = [
    "FolderSource",
    "Frame",
    "FrameSource",
    "ImageSource",
    "LatestFrameReader",
    "Picamera2Source",
    "SourceError",
    "StreamSource",
    "VideoFileSource",
    "WebcamSource",
    "names_a_camera",
    "open_source",
    "redact",
]


def open_source(spec: str, *, width: int = 640, height: int = 480, fps: float = 0, loop: bool = False) -> FrameSource:
    """Open the source ``spec`` names; SourceError (naming it) when it does not exist or cannot be read.

    ``width``/``height``/``fps`` are requests to cameras; for stills ``fps`` is the nominal rate
    behind their timestamps; video files keep their own rate. ``loop`` restarts file sources at
    their end (a stand-in camera for demos) and is meaningless for live ones.
    """
    camera: dict[str, Any] = {"width": width, "height": height, "fps": fps}
    if _is_stream(spec):
        return StreamSource(spec)
    if spec == "auto":
        return _first_camera(**camera)
    if spec == "picamera2":
        return Picamera2Source(**camera)
    if spec.isdigit():
        return WebcamSource(int(spec), **camera)
    if _is_camera_device(spec):
        return WebcamSource(spec, **camera)
    try:
        return _open_path(Path(spec.removeprefix("file://")), spec, fps=fps, loop=loop)
    except PermissionError as exc:  # Python's path checks raise where a folder on the way is closed to us
        raise SourceError(f"{spec}: cannot read {exc.filename or spec}: permission denied") from None


def _open_path(path: Path, spec: str, *, fps: float, loop: bool) -> FrameSource:
    if path.is_dir():
        return FolderSource(path, fps=fps, loop=loop)
    # by its name, or by its first bytes: a photo renamed .mp4 is one frame, not a video that ends at once
    if path.suffix.lower() in IMAGE_SUFFIXES or (path.is_file() and cv2.haveImageReader(str(path))):
        return ImageSource(path, fps=fps, loop=loop)
    if not path.exists():
        expected = "auto, picamera2, 0, /dev/video0, a URL or a path"
        raise SourceError(f"{spec}: no such file, folder or camera (expected {expected})")
    return VideoFileSource(path, loop=loop)


def names_a_camera(spec: str) -> bool:
    """Whether ``spec`` is a camera or a stream rather than a file: what ``check-config`` must not open, as the
    running service may hold it (and a camera need not be there yet)."""
    return spec in ("auto", "picamera2") or spec.isdigit() or _is_camera_device(spec) or _is_stream(spec)


def _is_camera_device(spec: str) -> bool:
    """/dev/video0, a stable name such as /dev/v4l/by-id/usb-…-video-index0 or a udev rule's own (any of them
    perhaps not plugged in yet): a name under /dev/ but for the files and folders there, such as a clip on
    the RAM disk (/dev/shm/clip.mp4)."""
    if not spec.startswith("/dev/"):
        return False
    try:
        mode = os.stat(spec).st_mode
    except OSError:  # not there (yet), or not ours to look at: a camera to wait for
        return True
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _is_stream(spec: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://", spec, re.IGNORECASE)) and not spec.lower().startswith("file://")


def _first_camera(*, width: int, height: int, fps: float) -> FrameSource:
    """The Pi camera when picamera2 has one, else the first V4L2 device that delivers frames."""
    reasons = []
    try:
        return Picamera2Source(width=width, height=height, fps=fps)
    except SourceError as exc:
        reasons.append(str(exc))
    devices = sorted(glob.glob("/dev/video*"), key=lambda d: int(re.sub(r"\D", "", d) or 0))
    for device in devices:
        try:
            return WebcamSource(device, width=width, height=height, fps=fps)
        except SourceError as exc:
            reasons.append(str(exc))
    if not devices:
        reasons.append("no /dev/video* devices")
    raise SourceError("no camera found: " + "; ".join(reasons), transient=True)  # one may be plugged in
