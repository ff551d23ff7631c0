"""Scanner on real frames: where it looks, and that it finds what a full scan would."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.config import Config
from edge.pipeline import Pipeline
from edge.sources import Frame
from edge.vision.detector import HaarDetector
from edge.vision.scan import Scanner
from edge.vision.tracker import iou

MEDIA = Path(__file__).resolve().parent / "fixtures" / "media"


class CountingDetector(HaarDetector):
    """The real Haar detector, counting what it is asked to scan."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = {"full": 0, "region": 0, "near": 0}

    def detect(self, frame, region=None):
        self.calls["full" if region is None else "region"] += 1
        return super().detect(frame, region)

    def detect_near(self, frame, box, margin=0.5):
        self.calls["near"] += 1
        return super().detect_near(frame, box, margin)


def frames_of(image, count: int, fps: float = 15.0) -> list[Frame]:
    return [Frame(image.copy(), None, n, n / fps) for n in range(count)]


def test_a_still_scene_gets_full_scans_only_every_interval_and_still_faces_are_not_rescanned():
    detector = CountingDetector()
    scanner = Scanner(detector, full_scan_interval=0.5, margin=0.5, motion_threshold=10)
    image = cv2.imread(str(MEDIA / "three_faces.jpg"))
    first, *rest = frames_of(image, 15)  # one second
    faces = scanner.scan(first, [])
    assert len(faces) == 3
    # the pipeline holds still faces where they are; the scanner need not look for them
    found = [scanner.scan(frame, faces, [True] * 3) for frame in rest]
    # a full scan again at 0.53 s (the first frame 0.5 s on); nothing moved, so nothing else was scanned
    assert detector.calls == {"full": 2, "region": 0, "near": 0}
    assert [len(f) for f in found] == [0] * 7 + [3] + [0] * 6


def test_followed_faces_are_looked_for_near_where_they_were_between_full_scans():
    detector = CountingDetector()
    scanner = Scanner(detector, full_scan_interval=10, margin=0.5, motion_threshold=10)
    image = cv2.imread(str(MEDIA / "three_faces.jpg"))
    first, second = frames_of(image, 2)
    found = scanner.scan(first, [])
    again = scanner.scan(second, found)  # not skippable: each is looked for near its box
    assert detector.calls == {"full": 1, "region": 0, "near": 3}
    assert len(again) == 3 and all(max(iou(a, f) for f in found) > 0.5 for a in again)


def test_a_face_that_comes_in_is_found_by_scanning_where_the_picture_changed():
    detector = CountingDetector()
    scanner = Scanner(detector, full_scan_interval=10, margin=0.5, motion_threshold=10)
    with_face = cv2.imread(str(MEDIA / "one_face.jpg"))
    empty = cv2.imread(str(MEDIA / "no_face.jpg"))
    empty = cv2.resize(empty, (with_face.shape[1], with_face.shape[0]))
    scene = with_face.copy()
    scene[:, :] = empty[:, :]
    scene[:, :200] = with_face[:, :200]  # the face (at x 240-410) is not there yet
    assert scanner.scan(Frame(scene, None, 0, 0.0), []) == []
    arrived = scene.copy()
    arrived[100:360, 200:460] = with_face[100:360, 200:460]
    boxes = scanner.scan(Frame(arrived, None, 1, 1 / 15), [])
    assert detector.calls["full"] == 1 and detector.calls["region"] == 1
    assert len(boxes) == 1 and iou(boxes[0], (240, 140, 170, 170)) > 0.5


def test_a_face_that_keeps_its_look_is_held_without_a_scan_until_hold_asks_for_a_detection():
    shipped = Pipeline.from_config(Config())
    detector = CountingDetector()
    scanner = Scanner(detector, full_scan_interval=10, margin=0.5, motion_threshold=10)
    pipeline = Pipeline(detector, shipped.classifier, shipped.tracker, scanner, reclassify=0.5, hold=0.5)
    image = cv2.imread(str(MEDIA / "three_faces.jpg"))
    results = [pipeline.process(frame) for frame in frames_of(image, 9)]  # 0 to 0.53 s
    # a full scan finds them, a near scan each confirms them (min_hits 2) at 0.07 s; then they are held
    assert detector.calls == {"full": 1, "region": 0, "near": 3}
    assert all({t.id for t in r.tracks} == {1, 2, 3} for r in results[1:])
    # 0.5 s after their last detection, each is looked for again
    pipeline.process(Frame(image.copy(), None, 9, 9 / 15))
    assert detector.calls == {"full": 1, "region": 0, "near": 6}
    # a face whose look at its box changed (it moved) is looked for at once, and followed
    moved = np.roll(image, 9, axis=0)
    after = pipeline.process(Frame(moved, None, 10, 10 / 15))
    assert detector.calls["near"] + detector.calls["full"] + detector.calls["region"] > 7
    assert {t.id for t in after.tracks} == {1, 2, 3} and all(t.last_seen == t.detected for t in after.tracks)


def test_each_patch_of_change_is_scanned_on_its_own_in_detail():
    detector = CountingDetector()
    scanner = Scanner(detector, full_scan_interval=10, margin=0.5, motion_threshold=10)
    three = cv2.imread(str(MEDIA / "three_faces.jpg"))
    empty = cv2.resize(cv2.imread(str(MEDIA / "no_face.jpg")), (1280, 960))  # a 1280x960 camera
    assert scanner.scan(Frame(empty, None, 0, 0.0), []) == []
    arrived = empty.copy()
    came = [((40, 60), (40, 60)), ((450, 110), (1050, 750))]  # two faces come in, far apart: (from, to)
    for (x, y), (tx, ty) in came:
        arrived[ty - 10 : ty + 170, tx - 10 : tx + 170] = three[y - 10 : y + 170, x - 10 : x + 170]
    boxes = scanner.scan(Frame(arrived, None, 1, 1 / 15), [])
    assert detector.calls == {"full": 1, "region": 2, "near": 0}  # two regions, not one box around both
    assert len(boxes) == 2 and all(max(iou(b, (x, y, 150, 150)) for b in boxes) > 0.5 for _, (x, y) in came)
