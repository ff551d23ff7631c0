"""LatestFrameReader: capture in a thread, hand over only the newest frame.

A live camera does not wait for a slow consumer; queueing its frames would only add latency (the
emotion published would be seconds old). So the capture thread overwrites the one waiting frame
and counts what it overwrote. File sources cannot be dropped from without losing data, so for them
the thread waits for the consumer instead. A live source that fails is reopened with exponential
backoff (capped at a few seconds, so a camera back from a reboot is found soon), forever: an unplugged
camera must not end a service that should resume when it returns. A file source that fails is an
error for the consumer to raise, never a quiet end.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from edge.sources.base import Frame, FrameSource, SourceError

log = logging.getLogger(__name__)

RUNNING, RECONNECTING, ENDED = "running", "reconnecting", "ended"


class LatestFrameReader:
    """Wraps a source opened by ``opener``; the first open happens here, so its errors are the caller's.

    ``read()`` returns the newest frame not yet returned, or None after ``timeout`` or at the end
    (``ended`` tells which). Live frames are renumbered by the reader, so gaps in ``index`` are the
    dropped frames across reconnects too. ``capture_ms`` is a moving average of the time spent in
    the source's ``read()``, which for a camera includes waiting for its next frame. ``state`` is
    "running", "reconnecting" or "ended", and ``reconnects`` counts the times a lost live source came
    back, for health reporting.
    """

    def __init__(
        self, opener: Callable[[], FrameSource], *, retry_initial: float = 0.5, retry_max: float = 5.0
    ) -> None:
        self._opener = opener
        self._source = opener()
        self.name = self._source.name
        self.live = self._source.live
        self.fps = self._source.fps
        self._retry = (retry_initial, retry_max)
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._frame: Frame | None = None
        self._error: SourceError | None = None
        self._captured = 0
        self.state = RUNNING
        self.reconnects = 0
        self.dropped = 0
        self.capture_ms = 0.0
        self._thread = threading.Thread(target=self._run, name=f"capture {self.name}", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        """Frames captured and not yet read: 0 or 1 by design."""
        return int(self._frame is not None)

    @property
    def ended(self) -> bool:
        """True once the source has ended (or the reader closed) and its last frame, or its error, was read."""
        return self.state == ENDED and self._frame is None and self._error is None

    def read(self, timeout: float | None = None) -> Frame | None:
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self.state == ENDED, timeout)
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            if frame is None and self._error is not None:
                error, self._error = self._error, None
                raise error
            return frame

    def close(self, timeout: float = 1.0) -> None:
        """Stop capturing; the thread closes the source itself, as a capture object must not be released mid-read."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout)

    def __enter__(self) -> LatestFrameReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                started = time.perf_counter()
                try:
                    frame = self._source.read()
                except SourceError as exc:
                    if not self.live:
                        self._error = exc
                        break
                    frame = None
                    lost = str(exc)
                else:
                    lost = f"{self.name}: no frame"
                if frame is None:
                    if not self.live or not self._reconnect(lost):
                        break
                    continue
                self.capture_ms += 0.1 * ((time.perf_counter() - started) * 1000.0 - self.capture_ms)
                self._hand_over(frame)
        finally:
            self._source.close()
            with self._cond:
                self.state = ENDED
                self._cond.notify_all()

    def _hand_over(self, frame: Frame) -> None:
        with self._cond:
            if self.live:
                frame = dataclasses.replace(frame, index=self._captured)
                self._captured += 1
                self.dropped += self._frame is not None
            else:
                self._cond.wait_for(lambda: self._frame is None or self._stopping.is_set())
            self._frame = frame
            self._cond.notify_all()

    def _reconnect(self, reason: str) -> bool:
        """Reopen the live source with exponential backoff; False only when the reader is closing."""
        log.warning("%s; reconnecting", reason)
        self.state = RECONNECTING
        self._source.close()
        delay, retry_max = self._retry
        while not self._stopping.wait(delay):
            try:
                self._source = self._opener()
            except Exception:  # whatever a half-enumerated device throws, the answer is to try again later
                delay = min(delay * 2, retry_max)
                continue
            log.info("%s: capturing again", self.name)
            self.reconnects += 1
            self.state = RUNNING
            return True
        return False
