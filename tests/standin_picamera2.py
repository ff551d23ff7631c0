"""A stand-in for picamera2, the one part of the camera stack that cannot exist off a Pi: faked at its
API (the Picamera2 class as edge.sources.picamera uses it), for in-process tests and, through
``standin_env``, for service subprocesses."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import CancelledError, Future
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
MEDIA = REPO / "tests" / "fixtures" / "media"


class StandInPicamera2:
    """picamera2's Picamera2 as Picamera2Source uses it, faults included; its planes come from a real photo.

    As in picamera2, a capture is a job: ``capture_arrays(names, wait=False)`` returns it, ``wait(job,
    timeout)`` returns its arrays or re-raises what the job raised, or raises concurrent.futures.TimeoutError,
    and ``capture_arrays(names)`` waits for it for ever. A camera that stops completing requests (a loose
    cable: libcamera's "Camera frontend has timed out!") leaves its jobs pending; ``cancel_all_and_flush()``
    cancels them; ``close()`` with one pending fails, as picamera2's would wait behind it for ever (its stop
    is a job queued after it). The lores array is shaped as picamera2 returns YUV420: (height * 3 / 2,
    stride), stride padded. The class attributes below are the faults, counted per camera object (a reopen
    starts afresh), so that a service subprocess can be given them too (``standin_env``).
    """

    cameras: ClassVar[list[dict]] = [{"Model": "imx708", "Num": 0, "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a"}]
    instances: ClassVar[list[StandInPicamera2]] = []
    frame_interval: ClassVar[float] = 1 / 30  # the camera's pace: a request completes a frame after the last
    hang_after: ClassVar[int | None] = None  # frames after which no request completes
    fail_after: ClassVar[tuple[int, BaseException] | None] = None  # frames after which every job raises this
    close_raises: ClassVar[bool] = False  # close() raises RuntimeError, as picamera2's may
    close_hangs: ClassVar[bool] = False  # close() never returns: the driver is stuck

    def __init__(self, camera_num: int = 0) -> None:
        self.config = None
        self.started = self.closed = False
        self.frames = 0
        self._jobs: list[Future] = []
        StandInPicamera2.instances.append(self)

    @classmethod
    def global_camera_info(cls):
        return cls.cameras

    def create_video_configuration(self, main, lores, controls):
        return {"main": main, "lores": lores, "controls": controls}

    def configure(self, config):
        self.config = config

    def stream_configuration(self, name):
        width, height = self.config[name]["size"]
        return {"size": (width, height), "stride": (width + 63) // 64 * 64}

    def start(self):
        self.started = True

    def capture_arrays(self, names=("main",), wait=None, signal_function=None):
        job: Future = Future()
        self._jobs.append(job)
        if self.fail_after is not None and self.frames >= self.fail_after[0]:
            job.set_exception(self.fail_after[1])
        elif self.hang_after is None or self.frames < self.hang_after:
            job.set_result(self._arrays(names))
            self.frames += 1
        return job if wait is False else self.wait(job)

    def wait(self, job, timeout=None):
        if job.done():
            time.sleep(self.frame_interval)
        return job.result(timeout)

    def cancel_all_and_flush(self):
        for job in self._jobs:
            if not job.done():
                job.set_exception(CancelledError())
        self._jobs = []

    def close(self):
        if any(not job.done() for job in self._jobs):
            raise AssertionError("close() with a capture pending: picamera2 would wait behind it for ever")
        if self.close_hangs:
            threading.Event().wait()
        self.closed = True
        if self.close_raises:
            raise RuntimeError("Failed to release camera")

    def _arrays(self, names):
        photo = cv2.imread(str(MEDIA / "three_faces.jpg"))
        main = cv2.resize(photo, self.config["main"]["size"])
        width, height = self.config["lores"]["size"]
        yuv = cv2.cvtColor(cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2YUV_I420)
        stride = self.stream_configuration("lores")["stride"]
        lores = np.zeros((height * 3 // 2, stride), np.uint8)
        lores[:, :width] = yuv
        return [{"main": main, "lores": lores}[n] for n in names], {"SensorTimestamp": 0}


def standin_env(tmp_path: Path, **faults: object) -> dict[str, str]:
    """Environment for a service subprocess whose ``import picamera2`` gets StandInPicamera2 with ``faults``
    (class attributes, written as their repr) set."""
    folder = tmp_path / "standin"
    folder.mkdir(exist_ok=True)
    settings = "".join(f"Picamera2.{key} = {value!r}\n" for key, value in faults.items())
    (folder / "picamera2.py").write_text(f"from standin_picamera2 import StandInPicamera2 as Picamera2\n{settings}")
    return {"PYTHONPATH": os.pathsep.join([str(folder), str(REPO / "tests"), str(REPO)])}
