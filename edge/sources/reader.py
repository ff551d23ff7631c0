"""LatestFrameReader: capture in a thread, hand over only the newest frame.

A live camera does not wait for a slow consumer; queueing its frames would only add latency (the
emotion published would be seconds old). So the capture thread overwrites the one waiting frame
and counts what it overwrote. File sources cannot be dropped from without losing data, so for them
the thread waits for the consumer instead. A file source that fails, whatever it raises, is an error
for the consumer to raise, never a quiet end.

A live source that fails, whatever it raises (a driver's RuntimeError is as much an outage as a
SourceError), is reopened with exponential backoff capped at a few seconds, so a camera back from a
reboot is found soon, forever: an unplugged camera must not end a service that should resume when it
returns; one not there yet at the start can be waited for the same way. The backoff starts over only
once the source has delivered for STEADY seconds: a stream that drops after a few frames is reopened
ever more slowly, not twice a second, and an outage has at most four log lines however often it
flaps (lost; capturing again; lost again, unstable; steady again).

With ``realtime`` a file source is handed over at its own pace (each frame once its ``ts`` has come, counted
from the first frame), as a camera would deliver it: a recording replayed to test what subscribers see over
time. A consumer slower than that is caught up with, never skipped ahead of.

``progress`` is when the capture thread last got a frame or tried to reopen the source. A read or a
close that hangs (a camera driver stuck) stops it, which is what the service's watchdog goes by.
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
STEADY = 30.0  # seconds of frames after which a source that came back is back for good


def describe(exc: Exception, name: str) -> str:
    """A SourceError's message names its source; anything else gets the source's name and its type."""
    return str(exc) if isinstance(exc, SourceError) else f"{name}: {type(exc).__name__}: {exc}"


class LatestFrameReader:
    """Wraps a source opened by ``opener``; the first open happens here, so its errors are the caller's,
    but with ``name`` a first open failing for a reason retrying may fix (``SourceError.transient``) is
    waited for: the reader starts reconnecting under that name instead.

    ``read()`` returns the newest frame not yet returned, or None after ``timeout`` or at the end
    (``ended`` tells which). Live frames are renumbered by the reader, so gaps in ``index`` are the
    dropped frames across reconnects too. ``capture_ms`` is a moving average of the time spent in
    the source's ``read()``, which for a camera includes waiting for its next frame. ``state`` is
    "running", "reconnecting" (until the reopened source delivers a frame) or "ended", and
    ``reconnects`` counts the times a lost live source came back, for health reporting.
    """

    def __init__(
        self,
        opener: Callable[[], FrameSource],
        *,
        name: str | None = None,
        retry_initial: float = 0.5,
        retry_max: float = 5.0,
        steady: float = STEADY,
        realtime: bool = False,
    ) -> None:
        self._opener = opener
        self._realtime = realtime
        self._clock: tuple[float, float] | None = None  # (monotonic, ts) of the first frame, with realtime
        self._retry = (retry_initial, retry_max)
        self._delay = retry_initial
        self._steady = steady
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._frame: Frame | None = None
        self._error: SourceError | None = None
        self._captured = 0
        self._outage = False  # from a loss until the source has been back for ``steady`` seconds
        self._outage_began = self._came_back = 0.0
        self._said_back = self._said_unstable = False
        self.reconnects = 0
        self.dropped = 0
        self.capture_ms = 0.0
        self.progress = time.monotonic()
        self._source: FrameSource | None
        try:
            self._source = opener()
        except SourceError as exc:
            if name is None or not exc.transient:
                raise
            self._source = None
            self.name, self.live, self.fps = name, True, 0.0  # only live sources fail transiently
            self._lost(str(exc), f"starting without it, retrying every {retry_max:g} s at most")
        else:
            self.name, self.live, self.fps = self._source.name, self._source.live, self._source.fps
            self.state = RUNNING
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
            if self._source is None and not self._reopen():
                return
            while (source := self._source) is not None and not self._stopping.is_set():
                started = time.perf_counter()
                try:
                    frame = source.read()
                except Exception as exc:
                    if not self.live:
                        self._error = exc if isinstance(exc, SourceError) else SourceError(describe(exc, self.name))
                        break
                    frame, lost = None, describe(exc, self.name)
                else:
                    lost = f"{self.name}: no frame"
                self.progress = time.monotonic()
                if frame is None:
                    if not self.live or self._stopping.is_set() or not self._reconnect(lost):
                        break  # a read that fails because the reader is closing is no outage to log
                    continue
                self.capture_ms += 0.1 * ((time.perf_counter() - started) * 1000.0 - self.capture_ms)
                self._delivering()
                if self._realtime and not self.live:
                    self._pace(frame.ts)
                self._hand_over(frame)
        finally:
            self._close(say=True)
            with self._cond:
                self.state = ENDED
                self._cond.notify_all()

    def _pace(self, ts: float) -> None:
        """Wait until the frame at ``ts`` is due, or the reader closes."""
        now = time.monotonic()
        if self._clock is None:
            self._clock = (now, ts)
        self._stopping.wait(self._clock[0] + ts - self._clock[1] - now)

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

    def _close(self, *, say: bool) -> None:
        """Close the source if one is open; what its close() raises (picamera2's may) is logged if ``say``."""
        source, self._source = self._source, None
        if source is None:
            return
        try:
            source.close()
        except Exception as exc:
            if say:
                log.warning("%s: cannot close (%s: %s)", self.name, type(exc).__name__, exc)

    def _reconnect(self, reason: str) -> bool:
        """Close the lost live source and open it again; False only when the reader is closing. The outage
        is logged before the close, which may hang; a close that fails is logged with the outage's lines."""
        said = self._lost(reason, "reconnecting")
        self._close(say=said)
        return self._reopen()

    def _reopen(self) -> bool:
        """Open the source with backoff until it opens (True) or the reader is closing (False)."""
        while not self._stopping.wait(self._delay):
            self._delay = min(self._delay * 2, self._retry[1])
            self.progress = time.monotonic()  # an attempt is progress: a camera being looked for is not hung
            try:
                source = self._opener()
            except Exception:  # whatever a half-enumerated device throws, the answer is to try again later
                continue
            finally:
                self.progress = time.monotonic()
            self._source, self.name, self.fps = source, source.name, source.fps
            return True
        return False

    def _lost(self, reason: str, doing: str) -> bool:
        """One warning when an outage begins, one more if the source fails again after it came back but
        before it was steady (flapping), and none for the rest of the outage; True if it logged one."""
        now = time.monotonic()
        self.state = RECONNECTING
        if not self._outage:
            self._outage, self._outage_began = True, now
            self._said_back = self._said_unstable = False
            log.warning("%s; %s", reason, doing)
            return True
        if self._said_back and not self._said_unstable:
            log.warning("%s %.1f s after it came back; reconnecting, without more lines until it delivers for %g s",
                        reason, now - self._came_back, self._steady)  # fmt: skip
            self._said_unstable = True
            return True
        return False

    def _delivering(self) -> None:
        """A frame came: the first after a reopen ends the reconnection, ``steady`` seconds of them the outage."""
        now = self.progress
        if self.state == RECONNECTING:
            self.state = RUNNING
            self.reconnects += 1
            self._came_back = now
            if not self._said_back:
                log.info("%s: capturing again after %.1f s", self.name, now - self._outage_began)
                self._said_back = True
        elif self._outage and now - self._came_back >= self._steady:
            if self._said_unstable:
                log.info("%s: steady again (%g s of frames without a loss)", self.name, self._steady)
            self._outage = False
            self._delay = self._retry[0]
