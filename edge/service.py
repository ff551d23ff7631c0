"""The service: frames from the source through the pipeline, out to MQTT, until told to stop.

It outlives everything that can go away on a Pi (the broker: the publisher's outbox keeps every event
until the broker has it, and reconnects; the camera: the reader reopens it, or waits for one not there
yet at the start, while the clock ends its tracks and the retained ``camera`` topic says it is offline)
and stops only at the end of a file, after ``max_frames``, on a file that cannot be read on (an error),
or on SIGTERM/SIGINT, when it ends every live track, publishes the final state and ``offline``, sends
what it can and exits within two seconds, as systemd expects of a unit it is stopping.

What it cannot outlive it leaves to systemd: a capture thread that ends although the source is live is
an error exit (``Restart=on-failure``), and the watchdog is pinged only while the source makes progress,
so a camera whose driver hangs gets the service restarted instead of a loop that looks alive.
"""

from __future__ import annotations

import bisect
import logging
import secrets
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from edge import __version__
from edge.config import Config
from edge.mqtt import payloads
from edge.mqtt.commands import EnabledSwitch, state_path
from edge.mqtt.discovery import Discovery
from edge.mqtt.payloads import OFFLINE, ONLINE, Topics
from edge.mqtt.publisher import MqttPublisher, outbox_path
from edge.mqtt.summary import RollingSummary
from edge.pause import PAUSED, PausedReader
from edge.pipeline import FrameResult, Pipeline
from edge.preview import LiveView, PreviewServer
from edge.sources import FolderSource, FrameSource, ImageSource, LatestFrameReader, SourceError, open_source, redact
from edge.sources.reader import RECONNECTING, RUNNING
from edge.systemd import Watchdog, notify
from edge.vision.tracker import Track, TrackEvent

log = logging.getLogger(__name__)

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
FILE_CLOCK = 1000  # frames of a file whose processing time is kept to date its events (an end lags its frame)
READ_TIMEOUT = 0.2  # seconds the loop waits for a frame before it looks at the clock and the stop flag
STOP_BUDGET = 1.5  # seconds for the MQTT goodbye, so a stop ends within 2 s (the unit waits up to 20)
# Seconds without a frame or an attempt to reopen the source after which it counts as hung and the
# watchdog goes unpinged: longer than the sources' own waits (5 s for a picamera2 capture or a stream,
# 10 s for a V4L2 read, the reader's 5 s backoff), half the unit's WatchdogSec=30.
SOURCE_STALL = 15.0
HUNG = "hung"  # stats' source_state once the source has stalled: the reader cannot tell, being stuck in it


def cpu_temperature() -> float | None:
    """°C from the kernel's first thermal zone (the SoC on a Pi); None where there is none (VMs, containers)."""
    try:
        return int(THERMAL_ZONE.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None


@dataclass
class StatsWindow:
    """Frames and stage times since the last stats message; stats report this period, not all time."""

    started: float = field(default_factory=time.monotonic)
    frames: int = 0
    stage_ms: dict[str, float] = field(default_factory=dict)

    def add(self, timings_ms: dict[str, float]) -> None:
        self.frames += 1
        for stage, ms in timings_ms.items():
            self.stage_ms[stage] = self.stage_ms.get(stage, 0.0) + ms

    def means(self) -> dict[str, float]:
        return {stage: total / self.frames for stage, total in self.stage_ms.items()} if self.frames else {}

    def fps(self, now: float) -> float:
        return self.frames / max(now - self.started, 1e-6)


class Service:
    """Runs one device: ``run()`` blocks until the source ends, ``max_frames`` or ``stop()``."""

    # Built by run(), not __init__: each may refuse to start, and run() is where that is reported.
    pipeline: Pipeline
    publisher: MqttPublisher
    reader: LatestFrameReader | PausedReader
    switch: EnabledSwitch
    summary: RollingSummary

    def __init__(self, config: Config, *, max_frames: int | None = None, discovery: bool = True) -> None:
        """``discovery=False`` leaves Home Assistant discovery alone, neither publishing nor clearing it:
        for the demo, which runs beside the device under another topic level but is not the device."""
        self.config = config
        self.discovery = discovery
        self.max_frames = max_frames
        self.topics = Topics.of(config.mqtt.topic_prefix, config.mqtt.device_id)
        self.device = config.mqtt.device_id
        self._stop = threading.Event()
        self._watchdog = Watchdog()
        self._window = StatsWindow()
        self._frames = 0
        self._last_ts = 0.0
        self._file_clock: deque[tuple[float, float]] = deque(maxlen=FILE_CLOCK)  # (frame time, wall time)
        self._state_key: tuple[int, str, bool] | None = None
        self._scores: dict[str, float] | None = None
        self._scores_sent = -float("inf")
        self.live = LiveView(self.device)
        self._preview: PreviewServer | None = None
        self._discovery: Discovery | None = None
        self._state_sent = 0.0
        self._stats_sent = 0.0
        self._started = 0.0
        self._camera = ""  # the retained camera status last published
        self._status = ""  # the STATUS= last sent to systemd
        self._stalled = False  # the source has made no progress for SOURCE_STALL
        self.run_id = secrets.token_hex(6)  # names this run's events, with their seq, for consumers' de-duplication
        self._seq = 0
        self.ready = threading.Event()

    def stop(self) -> None:
        """Ask ``run()`` to finish; safe from a signal handler or another thread."""
        self._stop.set()

    def run(self) -> None:
        """Raises ConfigError/ModelError/DetectorError/SourceError (named, one line) when it cannot start,
        and SourceError when the capture of a live source ends, which the reader never lets happen."""
        self._started = time.monotonic()
        c = self.config
        self.pipeline = Pipeline.from_config(c)
        self.publisher = MqttPublisher(c.mqtt, self.topics.availability, outbox_path(c.mqtt))
        labels = self.pipeline.classifier.labels
        self.summary = RollingSummary(c.summary, self.publisher, self.topics.summary, self.device, labels)
        self.switch = EnabledSwitch(self.publisher, self.topics, state_path())
        if self.discovery:
            self._discovery = Discovery(c, self.publisher, self.pipeline.classifier.labels)
            self._discovery.attach()  # with [homeassistant] enabled = false it clears what a run before published
        self.switch.attach()
        if c.preview.enabled:
            self._preview = PreviewServer(c.preview, self.live)
            self._preview.start()
        # The source opens last of what may refuse to start: a failure after it would leave its capture
        # thread inside OpenCV as the process exits, which aborts it (rc 134) instead of the error's one
        # line. A paused device opens none; a camera not there yet is waited for, as one lost later is.
        name = redact(c.source.spec)
        self.reader = self._new_reader(name) if self.switch.enabled else PausedReader(name)
        try:
            self.publisher.start()
            classifier = self.pipeline.classifier
            log.info(
                "ready in %.2f s: source %s%s, model %s… (%s, %d thread(s)), publishing to %s/ on %s:%d",
                time.monotonic() - self._started,
                self.reader.name,
                " (in real time)" if c.source.realtime and not self.reader.live else "",
                classifier.sha256[:12],
                classifier.backend,
                classifier.threads,
                self.topics.base,
                c.mqtt.host,
                c.mqtt.port,
            )
            self._publish_state(force=True)
            self._stats_sent = time.monotonic()
            if not self.switch.enabled:
                log.info("paused (the camera stays closed until ON on %s)", self.topics.enabled_set)
            self._status = self._status_text()
            notify("READY=1", f"STATUS={self._status}")
            self.ready.set()
            self._loop()
        finally:
            self._shutdown()

    def _loop(self) -> None:
        while not self._stop.is_set():
            wanted = self.switch.take()
            if wanted is not None:
                self._set_enabled(wanted)
            frame = self.reader.read(READ_TIMEOUT)
            if frame is not None:
                result = self.pipeline.process(frame)
                self.live.frame(frame.image, result.tracks)  # returns at once unless someone watches
                self._last_ts = frame.ts
                if not self.reader.live:
                    self._file_clock.append((frame.ts, time.time()))
                started = time.perf_counter()
                self._publish_events(result.events, frame.ts)
                self._publish_state()
                self.summary.observe(result.tracks, frame.ts)
                self._window.add(self._timings(result, (time.perf_counter() - started) * 1000.0))
                self._frames += 1
            elif self.reader.ended:
                if self.reader.live:  # its reader retries a camera for ever, so this is a fault: restart us
                    raise SourceError(f"{self.reader.name}: capture ended unexpectedly after {self._frames} frames")
                log.info("%s: end of source after %d frames", self.reader.name, self._frames)
                return
            elif self.reader.live:  # no frame from a camera: the clock ends its tracks, not the next frame
                clock = time.monotonic()  # a live source's frame time
                self._publish_events(self.pipeline.tracker.expire(clock), clock)
                self._publish_state()
            self._publish_camera()
            now = time.monotonic()
            if now - self._state_sent >= self.config.mqtt.heartbeat:
                self._publish_state(force=True)
            if now - self._stats_sent >= self.config.mqtt.stats_interval:
                self._publish_stats()
            self._watch_source()
            if self.max_frames is not None and self._frames >= self.max_frames:
                log.info("stopping after %d frames (--max-frames)", self._frames)
                return

    def _new_reader(self, name: str | None = None) -> LatestFrameReader:
        """``name``: the source's, to start without it while it is not there yet (a camera at boot)."""
        return LatestFrameReader(self._open_source, name=name, realtime=self.config.source.realtime)

    def _open_source(self) -> FrameSource:
        return open_service_source(self.config)

    def _set_enabled(self, enabled: bool) -> None:
        """Pause (release the camera, end the live tracks) or resume (open the source again)."""
        if enabled:
            try:
                self.reader = self._new_reader()
            except SourceError as exc:
                log.error("%s; staying paused", exc)
                self.switch.publish()  # the switch shows OFF again
                return
            log.info("resumed: watching %s", self.reader.name)
        else:
            self.reader.close(timeout=0.3)
            self.reader = PausedReader(self.reader.name)
            self._publish_events(self.pipeline.tracker.close(self._last_ts), self._last_ts)
            self._file_clock.clear()  # reopened, a file plays from its start again
            log.info("paused: camera released")
        self.switch.applied(enabled)
        self._publish_state()

    def _watch_source(self) -> None:
        """Ping the watchdog only while the source makes progress (frames, or attempts to reopen it; a
        paused one always does), so a read or close that hangs ends in a restart; STATUS= on a change."""
        stalled = time.monotonic() - self.reader.progress > SOURCE_STALL
        if stalled and not self._stalled:
            log.error("%s: no frame and no attempt to reopen it for %g s: the source hangs; the watchdog is no "
                      "longer pinged", self.reader.name, SOURCE_STALL)  # fmt: skip
        self._stalled = stalled
        if not stalled:
            self._watchdog.ping()
        status = self._status_text()
        if status != self._status:
            notify(f"STATUS={status}")
            self._status = status

    def _status_text(self) -> str:
        name, state = self.reader.name, self.reader.state
        if self._stalled:
            return f"camera hung, watchdog pings stopped: {name}"
        if state == RECONNECTING:
            return f"camera lost, reconnecting: {name}"
        return f"paused: {name}" if state == PAUSED else f"watching {name}"

    def _timings(self, result: FrameResult, publish_ms: float) -> dict[str, float]:
        return {"capture": self.reader.capture_ms, **result.timings_ms, "publish": publish_ms}

    def _shutdown(self) -> None:
        notify("STOPPING=1")
        if self._preview is not None:
            self._preview.stop()
        if self._discovery is not None:
            self._discovery.cancel()
        self.reader.close(timeout=0.3)
        self._publish_events(self.pipeline.tracker.close(self._last_ts), self._last_ts)
        self._publish_state()
        self._publish_camera()
        self._publish_stats()
        self.summary.publish()
        self.publisher.stop(timeout=STOP_BUDGET)
        log.info("stopped after %d frames", self._frames)

    def _publish_events(self, events: list[TrackEvent], frame_ts: float) -> None:
        now = time.time()
        labels = self.pipeline.classifier.labels
        self.summary.count(events)
        for event in events:
            # Event times are source times (file position or monotonic); date them by how long before
            # the current frame they happened, on the wall clock subscribers share. A file plays faster
            # than that clock: its event gets the wall time its frame was processed at, so events keep
            # their order (no end dated before its start).
            wall = self._file_wall(event.ts) if self._file_clock else now - max(0.0, frame_ts - event.ts)
            self._seq += 1
            body = payloads.event(event, device=self.device, wall=wall, labels=labels, run=self.run_id, seq=self._seq)
            self.publisher.publish(self.topics.events, payloads.encode(body))
            self.live.event(body)
            log.debug("event %s track %d %s %.2f id %s/%d", event.kind, event.track, event.emotion, event.confidence,
                      self.run_id, self._seq)  # fmt: skip

    def _file_wall(self, ts: float) -> float:
        """The wall time at which a file's frame of source time ``ts`` (or the one before it) was processed."""
        index = bisect.bisect_right(self._file_clock, (ts, float("inf"))) - 1
        return self._file_clock[max(index, 0)][1]

    def _publish_state(self, *, force: bool = False) -> None:
        """Retained state on a change of faces, dominant emotion or pause, and at the heartbeat; the
        scores alone on their own topic when they changed, at most every ``scores_interval``."""
        tracks: list[Track] = self.pipeline.tracker.tracks  # live tracks: a face missed for one frame stays
        labels = self.pipeline.classifier.labels
        paused = not self.switch.enabled
        body = payloads.state(tracks, device=self.device, wall=time.time(), labels=labels, paused=paused)
        key = payloads.state_key(body)
        now = time.monotonic()
        if force or key != self._state_key:
            self.publisher.publish(self.topics.state, payloads.encode(body), retain=True)
            self.live.state(body)
            self._state_key = key
            self._state_sent = now
        if body["scores"] != self._scores and now - self._scores_sent >= self.config.homeassistant.scores_interval:
            self.publisher.publish(self.topics.scores, payloads.encode(payloads.scores(body)), retain=True)
            self._scores = body["scores"]
            self._scores_sent = now

    def _publish_camera(self) -> None:
        """Retained ``camera``: online while the source delivers, offline while it is being reopened or has ended."""
        status = ONLINE if self.reader.state == RUNNING else OFFLINE
        if status != self._camera:
            self.publisher.publish(self.topics.camera, status, retain=True)
            self._camera = status

    def _publish_stats(self) -> None:
        now = time.monotonic()
        w = self._window
        figures = payloads.Stats(
            fps=w.fps(now),
            stages_ms=w.means(),
            frames=self._frames,
            frames_dropped=self.reader.dropped,
            faces=len(self.pipeline.tracker.tracks),
            queue_depth=self.publisher.queue_depth,
            events_dropped=self.publisher.events_dropped,
            mqtt_reconnects=self.publisher.reconnects,
            source_state=HUNG if self._stalled else self.reader.state,
            source_reconnects=self.reader.reconnects,
            cpu_temperature=cpu_temperature(),
            uptime=now - self._started,
            model_sha256=self.pipeline.classifier.sha256,
            backend=self.pipeline.classifier.backend,
            version=__version__,
        )
        body = payloads.stats(figures, device=self.device, wall=time.time())
        self.publisher.publish(self.topics.stats, payloads.encode(body), retain=True)
        self._window = StatsWindow(started=now)
        self._stats_sent = now


def open_service_source(config: Config) -> FrameSource:
    """The configured source as the service opens it. SourceError, too, for stills that end before a face could
    be published: a track starts once a face was seen in ``tracker.min_hits`` frames, and an image is one
    frame, so `run photo.jpg` would publish nothing and exit 0. Photos are what `analyze` is for; ``loop``
    makes an image a stand-in camera."""
    s = config.source
    source = open_source(s.spec, width=s.width, height=s.height, fps=s.fps, loop=s.loop)
    needed = config.tracker.min_hits
    if isinstance(source, (ImageSource, FolderSource)) and not s.loop and len(source.paths) < needed:
        source.close()
        frames = "1 still frame" if len(source.paths) == 1 else f"{len(source.paths)} still frames"
        raise SourceError(
            f"{source.name}: {frames}, and a face is published once seen in tracker.min_hits ({needed}) "
            f"frames; for photos use `emotion-edge analyze {s.spec}` (or --loop to repeat as a camera would)"
        )
    return source


def serve(config: Config, max_frames: int | None = None, *, discovery: bool = True) -> int:
    """Run the service in this (main) thread with SIGTERM/SIGINT wired to a clean stop."""
    service = Service(config, max_frames=max_frames, discovery=discovery)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        service.stop()
        signal.signal(signum, signal.SIG_DFL)  # a second one ends the process at once

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    service.run()
    return 0
