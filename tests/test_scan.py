"""Scanner on real frames: where it looks, and that it finds what a full scan would."""

from __future__ import annotations

from pathlib import Path

import cv2

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
