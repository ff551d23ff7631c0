"""HaarDetector on real faces: the still fixtures are FER-2013 test photos placed on a background
at known positions, so every box can be checked against where the face really is."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from helpers import read_image

import edge.vision.detector as detector_module
from edge.pipeline import crop
from edge.sources import Frame, open_source
from edge.vision.detector import DETECTORS, DetectorError, HaarDetector, create_detector, find_cascade
from edge.vision.tracker import iou

MEDIA = Path(__file__).resolve().parent / "fixtures" / "media"
# Where the fixture images have their faces (x, y, side), as they were composed.
THREE_FACES = [(40, 60, 150), (250, 250, 140), (450, 110, 150)]
ONE_FACE = (240, 140, 170)


def frame_of(name: str, gray_width: int | None = None) -> Frame:
    image = read_image(MEDIA / name)
    gray = None
    if gray_width:
        small = cv2.resize(image, (gray_width, gray_width * 3 // 4), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    return Frame(image, gray, 0, 0.0)


def matches(boxes, faces) -> bool:
    """Each real face has exactly one box over it, and no box is elsewhere."""
    squares = [(x, y, s, s) for x, y, s in faces]
    return len(boxes) == len(squares) and all(max(iou(b, sq) for b in boxes) > 0.5 for sq in squares)


@pytest.mark.parametrize("detect_width", [320, 480, 640])
def test_finds_the_faces_in_full_resolution_coordinates_whatever_the_detection_width(detect_width):
    detector = HaarDetector(detect_width=detect_width)
    assert matches(detector.detect(frame_of("three_faces.jpg")), THREE_FACES)
    assert matches(detector.detect(frame_of("one_face.jpg")), [ONE_FACE])


def test_faces_come_left_to_right_on_every_call():
    """OpenCV's cascade runs on several threads and lists faces in varying order; ids and the Python
    API's results must not vary with it."""
    detector, frame = HaarDetector(detect_width=640), frame_of("three_faces.jpg")
    for _ in range(10):
        boxes = detector.detect(frame)
        assert [x for x, *_ in boxes] == sorted(x for x, *_ in boxes) and len(boxes) == 3


def test_no_face_no_box():
    assert HaarDetector().detect(frame_of("no_face.jpg")) == []


def test_uses_the_sources_gray_plane_when_there_is_one():
    frame = frame_of("three_faces.jpg", gray_width=320)
    frame.image = frame.image.copy()
    frame.image[:] = 0  # proof the boxes came from the gray plane: the colour image shows nothing now
    assert matches(HaarDetector().detect(frame), THREE_FACES)


def test_min_size_is_in_full_resolution_pixels():
    # The three faces are 140-150 px, the single one 170 px (Haar's box for it is ~210 px).
    detector = HaarDetector(min_size=180, detect_width=320)
    assert detector.detect(frame_of("three_faces.jpg")) == []
    assert matches(detector.detect(frame_of("one_face.jpg")), [ONE_FACE])


def test_config_type_key_selects_the_class():
    assert list(DETECTORS.items()) == [("haar", HaarDetector)]
    assert isinstance(create_detector("haar", min_neighbors=4), HaarDetector)
    with pytest.raises(DetectorError, match=r"unknown detector.type 'yolo'; available: haar"):
        create_detector("yolo")


def test_default_cascade_is_found_where_opencv_ships_it():
    assert find_cascade().name == "haarcascade_frontalface_alt2.xml" and find_cascade().is_file()
    assert find_cascade("haarcascade_frontalface_default.xml").is_file()


def test_missing_or_broken_cascade_is_named(tmp_path):
    with pytest.raises(DetectorError, match=r"Haar cascade nope.xml not found in .*install opencv-data"):
        HaarDetector(cascade="nope.xml")
    with pytest.raises(DetectorError, match=r"/missing/face.xml: Haar cascade file not found"):
        HaarDetector(cascade="/missing/face.xml")
    broken = tmp_path / "broken.xml"
    broken.write_text("<opencv_storage><cascade>truncated")
    with pytest.raises(DetectorError, match=r"broken.xml: not a loadable Haar cascade"):
        HaarDetector(cascade=str(broken))


def committed_frames(step: int = 10) -> list[Frame]:
    """Every ``step``-th frame of the committed truth clips: PublicTest faces, degraded like a cheap camera."""
    frames = []
    for clip in sorted((MEDIA.parent / "truth").glob("*.mp4")):
        source = open_source(str(clip))
        frames += [frame for frame in iter(source.read, None) if frame.index % step == 0]
        source.close()
    return frames


def test_a_region_scan_finds_what_a_full_scan_finds():
    """What the Scanner relies on between full scans: near a face's last box, the region scan finds it again."""
    detector = HaarDetector()
    found = missed = 0
    for frame in [frame_of("three_faces.jpg"), frame_of("one_face.jpg"), *committed_frames()]:
        for box in detector.detect(frame):
            moved = (box[0] + box[2] // 10, box[1] - box[3] // 10, box[2], box[3])  # the face moved a little since
            near = detector.detect_near(frame, moved, 0.5)
            if any(iou(b, box) > 0.5 for b in near):
                found += 1
            else:
                missed += 1
    assert found >= 40 and missed <= 0.05 * found


def test_a_region_scan_of_part_of_the_frame_finds_only_the_faces_in_it():
    detector = HaarDetector()
    frame = frame_of("three_faces.jpg")
    left = detector.detect(frame, (0, 0, 240, 480))
    assert matches(left, THREE_FACES[:1])
    assert matches(detector.detect(frame, (200, 0, 440, 480)), THREE_FACES[1:])


def cut_by_the_edge(share: float, side: str) -> tuple[Frame, tuple[int, int, int, int]]:
    """``one_face.jpg`` moved so ``share`` of its face is beyond the frame's ``side`` edge, and the face's
    box clipped to the frame."""
    image = read_image(MEDIA / "one_face.jpg")
    x, y, side_px = ONE_FACE
    cut = round(share * side_px)
    shift = x + cut if side == "left" else x + side_px - cut - image.shape[1]
    room = abs(shift)
    padded = cv2.copyMakeBorder(image, 0, 0, room, room, cv2.BORDER_REPLICATE)
    moved = padded[:, room + shift : room + shift + image.shape[1]]
    left = x - shift
    box = (max(0, left), y, min(image.shape[1], left + side_px) - max(0, left), side_px)
    return Frame(moved, None, 0, 0.0), box


@pytest.mark.parametrize(("share", "side"), [(0.5, "left"), (0.3, "right"), (0.5, "right")])
def test_a_face_cut_by_the_frame_edge_is_found_mirrored_and_classified_whole(share, side, monkeypatch):
    frame, truth = cut_by_the_edge(share, side)
    detector = HaarDetector()
    (box,) = detector.detect(frame)
    assert iou(box, truth) > 0.5 and (box[0] == 0 if side == "left" else box[0] + box[2] == 640)
    (near,) = detector.detect_near(frame, box, 0.5)  # followed on, the same way
    assert iou(near, truth) > 0.5 and (near[0] == 0 if side == "left" else near[0] + near[2] == 640)
    face = crop(frame.image, box)  # completed by its mirror image: a square, not half a face
    assert face.shape[0] == face.shape[1] == box[3]
    monkeypatch.setattr(detector_module, "EDGE_PAD", 0.0)
    assert detector.detect(frame) == []  # without the mirror, the cascade sees no face there
