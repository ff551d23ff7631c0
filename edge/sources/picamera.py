"""The Raspberry Pi camera through picamera2 (libcamera), with a free detection plane.

The ISP scales a second, low-resolution "lores" stream in hardware; asking for it as YUV420 makes
its first rows a gray (Y) image the Haar detector can use as is, so the CPU never resizes or
colour-converts for detection. Crops for the classifier still come from the full "main" stream,
which is RGB888 (B, G, R byte order in memory: OpenCV's BGR, despite the name).

A capture waits at most CAPTURE_TIMEOUT: when libcamera discards failed requests (a loose ribbon
cable, "Camera frontend has timed out!") picamera2's capture job never completes, and a blocking
capture would hang the reader for ever, camera held. Timed out, it is a SourceError like any other
outage, and the reader reopens the camera.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

from edge.sources.base import Frame, SourceError

INSTALL_HINT = "on Raspberry Pi OS: sudo apt install python3-picamera2, in a venv made with --system-site-packages"
# Seconds a capture may take: many frame intervals at any rate worth tracking faces at, and well
# under the service's watchdog (it counts a reader that neither delivers nor retries for 15 s as hung).
CAPTURE_TIMEOUT = 5.0


def lores_size(width: int, height: int) -> tuple[int, int]:
    """Half the main size, even in both directions as YUV420 needs; the Haar detector's usual 320 px for 640x480."""
    return max(2, width // 4 * 2), max(2, height // 4 * 2)


class Picamera2Source:
    live = True
    name = "picamera2"

    def __init__(self, *, width: int = 640, height: int = 480, fps: float = 0, camera: int = 0) -> None:
        try:
            from picamera2 import Picamera2
        except ModuleNotFoundError:
            raise SourceError(f"picamera2: not installed ({INSTALL_HINT})") from None
        except (ImportError, ValueError, RuntimeError) as exc:  # e.g. "numpy.dtype size changed": numpy 2 in the venv
            raise SourceError(f"picamera2: installed but cannot be imported ({exc})") from None
        if not Picamera2.global_camera_info():
            raise SourceError(
                "picamera2: no camera attached (check the ribbon cable; `rpicam-hello --list-cameras`)", transient=True
            )
        self.fps = float(fps)
        self._index = 0
        self._camera: Any = None  # a Picamera2, once it opened
        try:
            self._camera = Picamera2(camera)
            config = self._camera.create_video_configuration(
                main={"size": (width, height), "format": "RGB888"},
                lores={"size": lores_size(width, height), "format": "YUV420"},
                controls={"FrameRate": fps} if fps > 0 else {},
            )
            self._camera.configure(config)
            # libcamera may align the sizes asked for; crop the planes by what it actually set up.
            self._lores = self._camera.stream_configuration("lores")["size"]
            self._camera.start()
        except (RuntimeError, OSError, IndexError) as exc:
            if self._camera is not None:
                self._camera.close()
            raise SourceError(f"picamera2: cannot start camera {camera} ({exc})", transient=True) from None

    def read(self) -> Frame:
        try:
            # Both planes from one request, so the gray plane and the crop source show the same instant.
            job = self._camera.capture_arrays(["main", "lores"], wait=False)
            (main, lores), _metadata = self._camera.wait(job, timeout=CAPTURE_TIMEOUT)
        except concurrent.futures.TimeoutError:  # not TimeoutError before Python 3.11, and an OSError after
            raise SourceError(f"picamera2: no frame in {CAPTURE_TIMEOUT:g} s (camera frontend timed out?)") from None
        except (RuntimeError, OSError) as exc:
            raise SourceError(f"picamera2: capture failed ({exc})") from None
        width, height = self._lores
        # YUV420 arrays are (height * 3 / 2, stride): the Y plane is the first rows, padded to the stride.
        frame = Frame(main, lores[:height, :width], self._index, time.monotonic())
        self._index += 1
        return frame

    def close(self) -> None:
        """Cancels a capture a timeout abandoned first: picamera2 stops the camera with a job queued
        behind the pending ones, so close() would otherwise wait for that capture for ever."""
        self._camera.cancel_all_and_flush()
        self._camera.close()
