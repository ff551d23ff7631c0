"""Frame sources on real media: the bundled demo clip and the still fixtures (FER-2013 faces).

Cameras cannot exist here. The picamera2 tests inject a stand-in ``picamera2`` module into
sys.modules, the import boundary of edge/sources/picamera.py, and nothing deeper (the service tests
put the same stand-in on a subprocess's path, ``standin_env``); the reader tests use a stand-in
"camera" that plays the real demo clip, says it is live and fails on demand.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import re
import shutil
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from helpers import locked_folder
from standin_picamera2 import StandInPicamera2

from edge.sources import (
    FolderSource,
    Frame,
    ImageSource,
    LatestFrameReader,
    Picamera2Source,
    SourceError,
    StreamSource,
    VideoFileSource,
    WebcamSource,
    names_a_camera,
    open_source,
    picamera,
)
from edge.tools.demo import DEMO_CLIP
from edge.vision.detector import HaarDetector
from edge.vision.tracker import iou

MEDIA = Path(__file__).resolve().parent / "fixtures" / "media"
CLIP_FRAMES, CLIP_FPS = 90, 15.0


def read_all(source) -> list[Frame]:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    return frames


# --- files -----------------------------------------------------------------------------------------


def test_video_file_yields_every_frame_with_file_time_then_ends():
    source = open_source(str(DEMO_CLIP))
    assert isinstance(source, VideoFileSource) and not source.live and source.fps == CLIP_FPS
    frames = read_all(source)
    source.close()
    assert [f.index for f in frames] == list(range(CLIP_FRAMES))
    assert frames[45].ts == pytest.approx(45 / CLIP_FPS)
    assert frames[0].image.shape == (480, 640, 3) and frames[0].image.dtype == np.uint8
    assert frames[0].gray is None


@pytest.mark.parametrize("rate", ["from the container", "unknown"])
def test_looped_video_keeps_counting_so_time_never_runs_backwards(rate):
    source = open_source(str(DEMO_CLIP), loop=True)
    if rate == "unknown":  # as a container that names no rate: the decoder's clock instead
        source.fps = 0.0
    frames = [source.read() for _ in range(2 * CLIP_FRAMES + 10)]
    source.close()
    assert [f.index for f in frames] == list(range(2 * CLIP_FRAMES + 10))
    steps = np.diff([f.ts for f in frames])
    assert steps == pytest.approx(np.full(len(steps), 1 / CLIP_FPS), abs=1e-3)  # across each restart too
    assert np.array_equal(frames[CLIP_FRAMES].image, frames[0].image)


def test_a_video_damaged_in_several_places_is_read_past_each_and_said_once(tmp_path, caplog):
    data = bytearray(DEMO_CLIP.read_bytes())
    for start in (len(data) // 5, len(data) // 2):  # two damaged stretches, some frames apart
        for offset in range(start, start + 3000, 7):
            data[offset] ^= 0xFF
    clip = tmp_path / "damaged.mp4"
    clip.write_bytes(bytes(data))
    source = VideoFileSource(clip)
    with caplog.at_level(logging.WARNING, logger="edge.sources.opencv"):
        frames = read_all(source)
    assert source.skipped > 1 and len(frames) + source.skipped == CLIP_FRAMES, (len(frames), source.skipped)
    assert len({f.index for f in frames}) == len(frames) and max(f.index for f in frames) < CLIP_FRAMES
    said = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(said) == 1, said


def test_a_photo_under_a_video_name_is_taken_for_the_photo_it_is(tmp_path):
    renamed = tmp_path / "holiday.mp4"
    shutil.copy(MEDIA / "one_face.jpg", renamed)
    for spec, kind in ((renamed, ImageSource), (DEMO_CLIP, VideoFileSource)):
        source = open_source(str(spec))
        assert isinstance(source, kind), spec
        source.close()


def test_image_is_one_frame_or_repeats_with_loop():
    path = MEDIA / "one_face.jpg"
    once = open_source(str(path))
    assert isinstance(once, ImageSource)
    frames = read_all(once)
    assert len(frames) == 1 and frames[0].image.shape == (480, 640, 3)
    looped = open_source(str(path), loop=True)
    assert [looped.read().index for _ in range(3)] == [0, 1, 2]


def test_folder_reads_images_in_name_order_and_skips_an_unreadable_one(tmp_path, caplog):
    for name in ("a.jpg", "c.jpg"):
        shutil.copy(MEDIA / "one_face.jpg", tmp_path / name)
    (tmp_path / "b.png").write_bytes(b"not a png at all")
    (tmp_path / "notes.txt").write_text("ignored: not an image")
    source = open_source(str(tmp_path), fps=10)
    assert isinstance(source, FolderSource)
    assert [p.name for p in source.paths] == ["a.jpg", "b.png", "c.jpg"]
    with caplog.at_level(logging.WARNING):
        frames = read_all(source)
    assert [f.index for f in frames] == [0, 2]  # the gap is the skipped file
    assert [f.ts for f in frames] == [0.0, 0.2]
    assert source.skipped == 1
    assert "b.png" in caplog.text


def test_a_truncated_photo_is_read_and_said_once_by_name_not_by_libjpeg_on_stderr(tmp_path, caplog, capfd):
    data = (MEDIA / "one_face.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) * 2 // 3])  # as a copy interrupted by a full card or a pulled plug
    with caplog.at_level(logging.WARNING, logger="edge.sources.images"):
        frames = read_all(open_source(str(cut)))
    assert len(frames) == 1 and frames[0].image.shape == (480, 640, 3)
    assert [r.getMessage() for r in caplog.records] == [f"{cut}: Premature end of JPEG file"]
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing.mp4", "missing.mp4: no such"),
        (lambda d: d / "missing.jpg", "missing.jpg: no such image file"),
        (lambda d: d / "empty", "no images"),
        (lambda d: d / "corrupt.mp4", "corrupt.mp4: not a readable video"),
        (lambda d: d / "corrupt.jpg", "corrupt.jpg: not a readable image"),
    ],
)
def test_bad_files_raise_source_error_naming_them(tmp_path, make, expected):
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with pytest.raises(SourceError, match=expected) as caught:
        open_source(str(make(tmp_path)))
    assert not caught.value.transient, "no retry brings a bad file back: the service exits on it"


def test_missing_webcam_and_dead_stream_are_named_with_the_password_masked_and_worth_waiting_for():
    with pytest.raises(SourceError, match=r"/dev/video99: no such camera device") as missing:
        open_source("/dev/video99")
    stable = "/dev/v4l/by-id/usb-Logitech_C270-video-index0"  # udev's name that survives a replug
    with pytest.raises(SourceError, match=f"{stable}: no such camera device") as unplugged:
        open_source(stable)
    assert unplugged.value.transient, "a camera by its stable name is waited for, not taken for a missing file"
    assert names_a_camera(stable) and not names_a_camera("/home/pi/clip.mp4")
    with pytest.raises(SourceError, match=r"^rtsp://admin:\*\*\*@127\.0\.0\.1:9/cam: cannot open") as caught:
        StreamSource("rtsp://admin:secret@127.0.0.1:9/cam")
    assert "secret" not in str(caught.value)
    assert missing.value.transient and caught.value.transient, "plugged in or booted later, they will open"


def test_a_file_behind_a_folder_this_user_cannot_enter_is_one_line_for_good(tmp_path):
    with (
        locked_folder(tmp_path) as locked,
        pytest.raises(SourceError, match=r"clip\.mp4: cannot read .*: permission denied$") as caught,
    ):
        open_source(str(locked / "clip.mp4"))
    assert not caught.value.transient


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no RAM disk at /dev/shm here")
def test_a_clip_on_the_ram_disk_is_a_file_and_dev_null_a_device_not_a_file():
    folder = Path("/dev/shm") / f"emotion-edge-test-{time.monotonic_ns()}"
    folder.mkdir()
    try:
        clip = folder / "clip.mp4"
        shutil.copy(DEMO_CLIP, clip)
        assert not names_a_camera(str(clip)), "check-config must open it to check it"
        source = open_source(str(clip))
        assert isinstance(source, VideoFileSource) and len(read_all(source)) == CLIP_FRAMES
        source.close()
    finally:
        shutil.rmtree(folder)
    assert names_a_camera("/dev/null"), "a character device is opened as a camera, never as a video file"
    assert names_a_camera("/dev/webcam-by-a-udev-rule"), "a camera's own name, unplugged for now, is waited for"


@pytest.mark.parametrize(
    ("url", "why"), [("rtsp://admin:secret@cam:554x/live", "Port could not be cast"), ("rtsp:///live", "no host")]
)
def test_a_malformed_url_is_refused_for_good_with_the_password_masked(url, why):
    with pytest.raises(SourceError, match=rf"^rtsp://.*: not a valid URL \(.*{why}") as caught:
        open_source(url)
    assert not caught.value.transient and "secret" not in str(caught.value)


@pytest.mark.skipif(
    bool(glob.glob("/dev/video*")) or importlib.util.find_spec("picamera2") is not None,
    reason="this machine has a camera stack; the test is about a machine without one",
)
def test_auto_without_any_camera_says_so():
    with pytest.raises(SourceError, match=r"no camera found: picamera2: not installed.*no /dev/video") as caught:
        open_source("auto")
    assert caught.value.transient, "a USB camera may be plugged in"


# --- picamera2 adapter (stand-in module at the import boundary) ---------------------------------------


@pytest.fixture
def picamera2(monkeypatch):
    module = types.ModuleType("picamera2")
    module.Picamera2 = StandInPicamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    monkeypatch.setattr(StandInPicamera2, "instances", [])
    return StandInPicamera2


def within(seconds, call):
    """What ``call()`` returns (or raises), failing the test if it has not returned after ``seconds``."""
    outcome: dict[str, object] = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{call.__qualname__} had not returned after {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_picamera2_asks_for_bgr_main_and_yuv_lores_and_detects_on_the_y_plane(picamera2):
    source = open_source("picamera2", width=640, height=480, fps=30)
    assert isinstance(source, Picamera2Source) and source.live
    camera = picamera2.instances[0]
    assert camera.config["main"] == {"size": (640, 480), "format": "RGB888"}
    assert camera.config["lores"] == {"size": (320, 240), "format": "YUV420"}
    assert camera.config["controls"] == {"FrameRate": 30}
    frame = source.read()
    assert frame.image.shape == (480, 640, 3)
    assert frame.gray.shape == (240, 320)  # the Y plane without the stride padding
    on_gray = HaarDetector().detect(frame)
    on_image = HaarDetector().detect(Frame(frame.image, None, 0, 0.0))
    assert len(on_gray) == 3
    for box in on_gray:  # full-resolution coordinates, as if detected on the main stream
        assert max(iou(box, other) for other in on_image) > 0.7
    source.close()
    assert camera.closed


def test_auto_prefers_the_pi_camera(picamera2):
    assert isinstance(open_source("auto"), Picamera2Source)


def test_picamera2_without_camera_is_worth_waiting_for_and_without_module_is_not(picamera2, monkeypatch):
    monkeypatch.setattr(picamera2, "cameras", [])
    with pytest.raises(SourceError, match=r"picamera2: no camera attached") as absent:
        Picamera2Source()
    assert absent.value.transient, "a camera libcamera has not detected yet may be there at the next try"
    monkeypatch.setitem(sys.modules, "picamera2", None)  # what `import picamera2` meets off a Pi
    with pytest.raises(SourceError, match=r"picamera2: not installed .*apt install python3-picamera2") as missing:
        Picamera2Source()
    assert not missing.value.transient


def test_a_broken_picamera2_install_is_told_apart_from_a_missing_one(monkeypatch, tmp_path):
    # A stand-in picamera2 that fails to import as the real one does when numpy 2 got into the venv.
    (tmp_path / "picamera2.py").write_text(
        'raise ValueError("numpy.dtype size changed, may indicate binary incompatibility")'
    )
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = r"picamera2: installed but cannot be imported \(numpy.dtype size changed"
    with pytest.raises(SourceError, match=broken) as caught:
        Picamera2Source()
    assert not caught.value.transient


def test_a_camera_that_fails_to_start_is_released_so_that_the_next_attempt_can_have_it(picamera2, monkeypatch):
    def busy(self):
        raise RuntimeError("Failed to start camera: Device or resource busy")

    monkeypatch.setattr(picamera2, "start", busy)
    with pytest.raises(SourceError, match=r"^picamera2: cannot start camera 0 \(Failed to start camera") as caught:
        Picamera2Source()
    assert caught.value.transient, "another process may let go of it"
    assert picamera2.instances[0].closed, "a camera left open is busy for every later attempt"


def test_a_failed_picamera2_capture_is_a_source_error(picamera2, monkeypatch):
    monkeypatch.setattr(picamera2, "fail_after", (0, RuntimeError("Failed to queue buffer")))
    with pytest.raises(SourceError, match=r"^picamera2: capture failed \(Failed to queue buffer\)$"):
        Picamera2Source().read()


def test_a_hung_picamera2_capture_times_out_as_a_source_error_and_the_camera_still_closes(picamera2, monkeypatch):
    monkeypatch.setattr(picamera, "CAPTURE_TIMEOUT", 0.2)  # 5 s in service; the seconds are not the point here
    monkeypatch.setattr(picamera2, "hang_after", 1)
    source = Picamera2Source()
    assert within(5, source.read).index == 0
    with pytest.raises(SourceError, match=r"^picamera2: no frame in 0.2 s \(camera frontend timed out\?\)$"):
        within(5, source.read)
    within(5, source.close)  # it cancels the abandoned capture first
    assert picamera2.instances[0].closed


# --- LatestFrameReader ------------------------------------------------------------------------------


class ClipCamera(VideoFileSource):
    """A stand-in for a camera: the real demo clip, looped, declared live; counts its reads. It can be
    told to vanish after some frames, as an unplugged USB camera does, raising ``fault`` then (given an
    Event, it hangs in that read until the Event is set, as a stuck driver does), and to fail to close."""

    live = True

    def __init__(
        self,
        vanish_after: int | None = None,
        *,
        fault: Exception | threading.Event | None = None,
        close_fault: Exception | None = None,
    ) -> None:
        super().__init__(DEMO_CLIP, loop=True)
        self.reads = 0
        self.vanish_after = vanish_after
        self.fault = fault
        self.close_fault = close_fault
        self.vanished: float | None = None  # when it first failed

    def read(self) -> Frame | None:
        if self.vanish_after is not None and self.reads >= self.vanish_after:
            self.vanished = self.vanished or time.monotonic()
            if isinstance(self.fault, Exception):
                raise self.fault
            if self.fault is not None:
                self.fault.wait()
            raise SourceError("/dev/video0: camera stopped delivering frames (unplugged?)")
        self.reads += 1
        return super().read()

    def close(self) -> None:
        super().close()
        if self.close_fault is not None:
            raise self.close_fault


def wait_for(predicate, what):
    """Wait for a condition the capture thread makes true; no timing is asserted, only reached."""
    for _ in range(2000):
        if predicate():
            return
        threading.Event().wait(0.005)
    pytest.fail(f"never happened: {what}")


def reader_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edge.sources.reader"]


def test_reader_keeps_only_the_newest_live_frame_and_counts_the_rest():
    camera = ClipCamera()
    with LatestFrameReader(lambda: camera) as reader:
        seen = []
        for _ in range(4):
            target = camera.reads + 3  # a slow consumer: the camera delivers three frames meanwhile
            wait_for(lambda t=target: camera.reads >= t, "three more captures")
            seen.append(reader.read(timeout=5).index)
    # at least two newer frames were handed over between reads (the third capture may still be in flight)
    assert all(b - a >= 2 for a, b in zip(seen, seen[1:])), seen
    assert reader.dropped >= sum(b - a - 1 for a, b in zip(seen, seen[1:]))
    assert reader.queue_depth in (0, 1)
    # closed, every frame captured was read, dropped or is the one still waiting: none is counted twice
    assert reader.dropped == camera.reads - len(seen) - reader.queue_depth


def test_reader_passes_every_file_frame_in_order_and_then_ends():
    with LatestFrameReader(lambda: open_source(str(DEMO_CLIP))) as reader:
        indices = []
        while not reader.ended:
            frame = reader.read(timeout=5)
            if frame is not None:
                indices.append(frame.index)
    assert indices == list(range(CLIP_FRAMES))
    assert reader.dropped == 0
    assert reader.read(timeout=0) is None


@pytest.mark.parametrize("spec", [str(DEMO_CLIP), str(MEDIA / "one_face.jpg")], ids=["video", "still"])
def test_realtime_hands_a_file_over_at_its_own_pace_and_every_frame_of_it(spec):
    """source.realtime: no frame before its time (its ts after the first's, on the wall clock), none skipped."""
    start = time.monotonic()  # before the reader's thread takes the first frame, which starts its clock
    with LatestFrameReader(lambda: open_source(spec, fps=20, loop=True), realtime=True) as reader:
        frames = [reader.read(timeout=5) for _ in range(12)]
        arrived = time.monotonic() - start
    ts = [f.ts for f in frames]
    assert [f.index for f in frames] == list(range(12)) and ts == sorted(ts)
    assert arrived >= ts[-1] - ts[0] > 0.3  # 11 frames of a 30 fps clip or a still at 20 fps: over 0.36 s
    with LatestFrameReader(lambda: open_source(spec, fps=20, loop=True)) as reader:
        start = time.monotonic()
        fast = [reader.read(timeout=5) for _ in range(60)]
        taken = time.monotonic() - start
    assert [f.index for f in fast] == list(range(60))
    assert taken < fast[-1].ts - fast[0].ts, "without realtime a file is read as fast as it is taken"  # 2-3 s


def test_reader_reconnects_a_vanished_camera_logging_each_state_change_once(caplog):
    attempts = []

    def opener():
        attempts.append(1)
        if len(attempts) == 1:
            return ClipCamera(vanish_after=5)
        if len(attempts) < 5:  # unplugged: three failed reopen attempts
            raise SourceError("/dev/video0: no such camera device")
        return ClipCamera()

    caplog.set_level(logging.INFO, logger="edge.sources.reader")
    with LatestFrameReader(opener, retry_initial=0.001, retry_max=0.004) as reader:
        indices = [reader.read(timeout=10).index for _ in range(8)]
        assert reader.state == "running" and reader.reconnects == 1
    assert len(attempts) == 5
    assert indices == sorted(indices) and len(set(indices)) == 8  # numbering continues across the gap
    lost, back = reader_lines(caplog)
    assert lost == "/dev/video0: camera stopped delivering frames (unplugged?); reconnecting"
    assert re.fullmatch(rf"{re.escape(str(DEMO_CLIP))}: capturing again after \d+\.\d s", back), back


def test_reader_takes_whatever_a_live_source_raises_as_an_outage_and_a_failing_close_in_its_stride(caplog):
    cameras: list[ClipCamera] = []

    def opener():
        failing = RuntimeError("Failed to release camera")
        cameras.append(ClipCamera(None if cameras else 3, fault=ValueError("buffer too small"), close_fault=failing))
        return cameras[-1]

    caplog.set_level(logging.INFO, logger="edge.sources.reader")
    reader = LatestFrameReader(opener, retry_initial=0.001, retry_max=0.004)
    indices = [reader.read(timeout=10).index for _ in range(6)]  # three from each camera at least
    assert indices == sorted(set(indices)) and len(cameras) == 2
    reader.close(timeout=5)
    assert not reader._thread.is_alive() and reader.state == "ended"
    lost, closing, back, closing_at_the_end = reader_lines(caplog)
    assert lost == f"{DEMO_CLIP}: ValueError: buffer too small; reconnecting"
    assert closing == closing_at_the_end == f"{DEMO_CLIP}: cannot close (RuntimeError: Failed to release camera)"
    assert "capturing again" in back
    # A file source is not reopened: whatever it raises is the consumer's error, not a quiet end.
    clip = ClipCamera(2, fault=KeyError("stream 0"))
    clip.live = False
    with LatestFrameReader(lambda: clip) as file_reader:
        assert [file_reader.read(timeout=10).index for _ in range(2)] == [0, 1]
        with pytest.raises(SourceError, match=rf"^{re.escape(str(DEMO_CLIP))}: KeyError: 'stream 0'$"):
            file_reader.read(timeout=10)


def test_a_flapping_camera_is_reopened_ever_more_slowly_with_four_lines_for_the_whole_outage(caplog):
    cameras: list[ClipCamera] = []
    opened: list[float] = []

    def opener():
        opened.append(time.monotonic())
        cameras.append(ClipCamera(vanish_after=2 if len(cameras) < 5 else None))  # five flaps, then it stays
        return cameras[-1]

    caplog.set_level(logging.INFO, logger="edge.sources.reader")
    with LatestFrameReader(opener, retry_initial=0.02, retry_max=0.4, steady=0.5):
        wait_for(lambda: "steady again" in caplog.text, "the camera steady again")
        gaps = [b - a for a, b in zip(opened, opened[1:])]
        assert all(gap >= min(0.02 * 2**i, 0.4) for i, gap in enumerate(gaps)), gaps  # 0.02, 0.04 … 0.32 s
        assert gaps[1] < 0.3, gaps  # doubling from the initial delay, not jumping to the longest at once
        steady = cameras[-1]
        steady.vanish_after = steady.reads  # a new outage after the steady spell: the backoff starts over
        wait_for(lambda: len(opened) == 7, "the next reopen")
        assert opened[-1] - steady.vanished < 0.3, "the first retry of a new outage is the initial delay again"
    lines = reader_lines(caplog)
    assert lines[0] == "/dev/video0: camera stopped delivering frames (unplugged?); reconnecting"
    assert "capturing again after" in lines[1]
    again = r"\d+\.\d s after it came back; reconnecting, without more lines until it delivers for 0.5 s"
    assert re.fullmatch(rf"{re.escape(lines[0].removesuffix('; reconnecting'))} {again}", lines[2]), lines[2]
    assert lines[3] == f"{DEMO_CLIP}: steady again (0.5 s of frames without a loss)"
    assert lines[4] == lines[0] and len(lines) <= 6, lines  # the new outage's own lines


def test_reader_told_a_name_waits_for_a_camera_missing_at_start_but_not_for_what_cannot_come(caplog):
    attempts = []

    def opener():
        attempts.append(1)
        if len(attempts) < 4:
            raise SourceError("/dev/video0: no such camera device", transient=True)
        return ClipCamera()

    with pytest.raises(SourceError):
        LatestFrameReader(opener)  # without a name the first failure is the caller's, as before
    caplog.set_level(logging.INFO, logger="edge.sources.reader")
    with LatestFrameReader(opener, name="0", retry_initial=0.2, retry_max=0.2) as reader:
        assert (reader.name, reader.state, reader.live) == ("0", "reconnecting", True)
        assert reader.read(timeout=10) is not None and reader.state == "running" and reader.name == str(DEMO_CLIP)
    waiting, back = reader_lines(caplog)
    assert waiting == "/dev/video0: no such camera device; starting without it, retrying every 0.2 s at most"
    assert back.startswith(f"{DEMO_CLIP}: capturing again after")

    def not_installed():
        raise SourceError("picamera2: not installed")

    with pytest.raises(SourceError, match="not installed"):
        LatestFrameReader(not_installed, name="picamera2")


def test_reader_progress_stands_still_while_a_read_hangs_and_moves_while_it_retries():
    release = threading.Event()
    camera = ClipCamera(vanish_after=3, fault=release)  # the fourth read hangs, as a stuck driver's does
    opens = []

    def opener():
        opens.append(1)
        if len(opens) > 1:
            raise SourceError("/dev/video0: no such camera device")
        return camera

    with LatestFrameReader(opener, retry_initial=0.01, retry_max=0.01) as reader:
        wait_for(lambda: camera.vanished is not None, "the read that hangs")
        stuck = reader.progress
        threading.Event().wait(0.3)
        assert reader.progress == stuck, "a read that hangs is no progress"
        release.set()  # the driver gives up at last: an error, then attempts to reopen
        wait_for(lambda: len(opens) > 5, "attempts to reopen")
        assert reader.progress > stuck + 0.3, "attempts to reopen are progress"


def test_a_read_that_fails_because_the_reader_is_closing_is_no_outage(caplog):
    release = threading.Event()
    camera = ClipCamera(vanish_after=1, fault=release)
    caplog.set_level(logging.INFO, logger="edge.sources.reader")
    reader = LatestFrameReader(lambda: camera)
    wait_for(lambda: camera.vanished is not None, "the read that hangs")
    reader.close(timeout=0.1)  # as a pause does, while the capture thread is still in that read
    release.set()  # which then fails, as a read from a camera being released does
    wait_for(lambda: reader.state == "ended", "the capture thread to end")
    assert reader_lines(caplog) == []


def test_reader_surfaces_a_file_error_even_after_its_thread_is_done(tmp_path):
    images = tmp_path / "stills"
    images.mkdir()
    (images / "bad.jpg").write_bytes(b"broken")
    reader = LatestFrameReader(lambda: FolderSource(images))
    wait_for(lambda: reader.state == "ended", "the capture thread to finish")
    assert not reader.ended  # not until the consumer has been told why
    with pytest.raises(SourceError, match=r"stills: none of its images is readable"):
        reader.read(timeout=5)
    assert reader.ended and reader.read(timeout=0) is None
    reader.close()
    assert not reader._thread.is_alive()


def test_webcam_source_opens_only_real_devices(tmp_path):
    fake_node = tmp_path / "video0"
    fake_node.write_bytes(b"")
    with pytest.raises(SourceError, match=r"video0: not a camera that delivers frames"):
        WebcamSource(str(fake_node))
