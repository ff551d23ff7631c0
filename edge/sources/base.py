"""What every frame source shares: the Frame it yields, the protocol it follows, the error it raises.

Sources are deliberately dumb (read a frame, close); timing policy such as dropping stale frames or
reconnecting a lost camera lives in :class:`edge.sources.reader.LatestFrameReader`, so each source
stays one small class per kind of input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class SourceError(RuntimeError):
    """A source that cannot be opened or has gone away; the message names it.

    ``transient`` marks a live source that failed to open for a reason that may pass (a camera not
    plugged in or not booted yet, a stream not up): the service starts anyway and keeps trying, as it
    does for a camera lost mid-run. What retrying cannot fix (a missing file, picamera2 not installed,
    a malformed URL) is not transient, so the service exits at once with the error instead of waiting.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass
class Frame:
    """One captured picture.

    ``gray`` exists so a camera with a cheap low-resolution luminance plane (the Pi camera's "lores"
    YUV stream) can hand it to the detector without a resize and colour conversion per frame;
    crops still come from the full-resolution ``image``.
    """

    image: np.ndarray  # BGR uint8, full resolution
    gray: np.ndarray | None  # detection plane, if the source has one
    index: int  # frame number from the source; gaps mean dropped frames
    ts: float  # seconds: position in a file, time.monotonic() for live sources


class FrameSource(Protocol):
    """One kind of input. ``live`` sources run at the camera's pace and may vanish; file sources end."""

    name: str  # what error messages and logs call it: a path, a URL, "/dev/video0", "picamera2"
    live: bool
    fps: float  # the source's nominal rate, 0 when unknown

    def read(self) -> Frame | None:
        """The next frame; None when a file source has ended. Raises SourceError when the source is gone."""
        ...

    def close(self) -> None: ...
