"""Frame sources on real media: the bundled demo clip and the still fixtures (FER-2013 faces).

Cameras cannot exist here. The picamera2 tests inject a stand-in ``picamera2`` module into
sys.modules, the import boundary of edge/sources/picamera.py, and nothing deeper; the reader tests
use a stand-in "camera" that plays the real demo clip and says it is live.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import shutil
import sys
import threading
import types
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest

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
    open_source,
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


def test_looped_video_keeps_counting_so_time_never_runs_backwards():
    source = open_source(str(DEMO_CLIP), loop=True)
    frames = [source.read() for _ in range(CLIP_FRAMES + 10)]
    source.close()
    assert [f.index for f in frames] == list(range(CLIP_FRAMES + 10))
    assert all(b.ts > a.ts for a, b in zip(frames, frames[1:]))
    assert np.array_equal(frames[CLIP_FRAMES].image, frames[0].image)


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
    with pytest.raises(SourceError, match=expected):
        open_source(str(make(tmp_path)))


def test_missing_webcam_and_dead_stream_are_named_with_the_password_masked():
    with pytest.raises(SourceError, match=r"/dev/video99: no such camera device"):
        open_source("/dev/video99")
    with pytest.raises(SourceError, match=r"^rtsp://admin:\*\*\*@127\.0\.0\.1:9/cam: cannot open") as caught:
        StreamSource("rtsp://admin:secret@127.0.0.1:9/cam")
    assert "secret" not in str(caught.value)


@pytest.mark.skipif(
    bool(glob.glob("/dev/video*")) or importlib.util.find_spec("picamera2") is not None,
    reason="this machine has a camera stack; the test is about a machine without one",
)
def test_auto_without_any_camera_says_so():
    with pytest.raises(SourceError, match=r"no camera found: picamera2: not installed.*no /dev/video"):
        open_source("auto")


# --- picamera2 adapter (stand-in module at the import boundary) ---------------------------------------


class StandInPicamera2:
    """Mimics the picamera2 calls Picamera2Source makes; its planes come from a real fixture photo.

    The lores array is shaped as picamera2 returns YUV420: (height * 3 / 2, stride), stride padded.
    """

    cameras: ClassVar[list[dict]] = [{"Model": "imx708", "Num": 0, "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a"}]
    instances: ClassVar[list[StandInPicamera2]] = []
    fail_capture: ClassVar[bool] = False

    def __init__(self, camera_num: int = 0) -> None:
        self.config = None
        self.started = self.closed = False
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

    def capture_arrays(self, names):
        if self.fail_capture:
            raise RuntimeError("Camera frontend has timed out!")
        photo = cv2.imread(str(MEDIA / "three_faces.jpg"))
        main = cv2.resize(photo, self.config["main"]["size"])
        width, height = self.config["lores"]["size"]
        yuv = cv2.cvtColor(cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2YUV_I420)
        stride = self.stream_configuration("lores")["stride"]
        lores = np.zeros((height * 3 // 2, stride), np.uint8)
        lores[:, :width] = yuv
        return [{"main": main, "lores": lores}[n] for n in names], {"SensorTimestamp": 0}

    def close(self):
        self.closed = True


@pytest.fixture
def picamera2(monkeypatch):
    module = types.ModuleType("picamera2")
    module.Picamera2 = StandInPicamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    monkeypatch.setattr(StandInPicamera2, "instances", [])
    return StandInPicamera2


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


def test_picamera2_without_camera_or_module_or_frames_raises_source_error(picamera2, monkeypatch):
    monkeypatch.setattr(picamera2, "cameras", [])
    with pytest.raises(SourceError, match=r"picamera2: no camera attached"):
        Picamera2Source()
    monkeypatch.setitem(sys.modules, "picamera2", None)  # what `import picamera2` meets off a Pi
    with pytest.raises(SourceError, match=r"picamera2: not installed .*apt install python3-picamera2"):
        Picamera2Source()


def test_a_broken_picamera2_install_is_told_apart_from_a_missing_one(monkeypatch, tmp_path):
    # A stand-in picamera2 that fails to import as the real one does when numpy 2 got into the venv.
    (tmp_path / "picamera2.py").write_text(
        'raise ValueError("numpy.dtype size changed, may indicate binary incompatibility")'
    )
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SourceError, match=r"picamera2: installed but cannot be imported \(numpy.dtype size changed"):
        Picamera2Source()


def test_picamera2_capture_failure_is_a_source_error(picamera2, monkeypatch):
    source = Picamera2Source()
    monkeypatch.setattr(picamera2, "fail_capture", True)
    with pytest.raises(SourceError, match=r"picamera2: capture failed .*timed out"):
        source.read()


# --- LatestFrameReader ------------------------------------------------------------------------------


class ClipCamera(VideoFileSource):
    """A stand-in for a camera: the real demo clip, looped, declared live; counts its reads and
    can be told to vanish after some frames, as an unplugged USB camera does."""

    live = True

    def __init__(self, vanish_after: int | None = None) -> None:
        super().__init__(DEMO_CLIP, loop=True)
        self.reads = 0
        self.vanish_after = vanish_after
        self.read_event = threading.Event()

    def read(self) -> Frame | None:
        if self.vanish_after is not None and self.reads >= self.vanish_after:
            raise SourceError("/dev/video0: camera stopped delivering frames (unplugged?)")
        self.reads += 1
        self.read_event.set()
        return super().read()


def wait_for(predicate, what):
    """Wait for a condition the capture thread makes true; no timing is asserted, only reached."""
    for _ in range(2000):
        if predicate():
            return
        threading.Event().wait(0.005)
    pytest.fail(f"never happened: {what}")


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
        assert reader.state == "running"
    assert len(attempts) == 5
    assert indices == sorted(indices) and len(set(indices)) == 8  # numbering continues across the gap
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "/dev/video0: camera stopped delivering frames (unplugged?); reconnecting",
        f"{DEMO_CLIP}: capturing again",
    ]


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
