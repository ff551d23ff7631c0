"""Reframing a caller's face crop: loose crops of real faces are cut back to the face, others kept as given."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import read_image

from edge.pipeline import crop
from edge.sources import Frame
from edge.vision.classifier import EmotionClassifier
from edge.vision.detector import HaarDetector, grow
from edge.vision.reframe import Reframer
from edge.vision.tracker import iou

MEDIA = Path(__file__).parent / "fixtures" / "media"
FER = Path(__file__).parent / "fixtures" / "fer" / "test"


@pytest.fixture(scope="module")
def detector() -> HaarDetector:
    return HaarDetector()


@pytest.fixture(scope="module")
def photo_faces(detector) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """(gray photo, the box a full-frame scan puts around each face on it): four faces on two photos."""
    faces = []
    for name in ("one_face.jpg", "three_faces.jpg"):
        gray = cv2.cvtColor(read_image(MEDIA / name), cv2.COLOR_BGR2GRAY)
        faces += [(gray, box) for box in detector.detect(Frame(gray, gray, 0, 0.0))]
    assert len(faces) == 4
    return faces


@pytest.mark.parametrize("margin", [0.2, 0.3, 0.4])
def test_a_loose_crop_is_cut_back_to_the_face(detector, photo_faces, margin):
    reframer = Reframer(detector)
    for gray, box in photo_faces:
        x, y, w, h = grow(box, margin, gray.shape[1], gray.shape[0])
        found = reframer.box(gray[y : y + h, x : x + w])
        assert found is not None, f"no face found in a crop {margin:.0%} wider than {box}"
        in_photo = (x + found[0], y + found[1], found[2], found[3])
        assert iou(in_photo, box) > 0.6, f"{in_photo} is not the face at {box}"
        assert found[2] < 0.85 * w


def test_crops_that_frame_a_face_or_show_none_are_kept(detector, photo_faces):
    reframer = Reframer(detector)
    for gray, box in photo_faces:
        assert reframer.box(crop(gray, box)) is None  # as the detector cut it
    fer = [read_image(path, cv2.IMREAD_GRAYSCALE) for path in sorted(FER.glob("*/*.jpg"))]
    assert fer and all(reframer.box(face) is None for face in fer)  # 48 px: too small to look inside
    no_face = cv2.cvtColor(read_image(MEDIA / "no_face.jpg"), cv2.COLOR_BGR2GRAY)
    assert reframer.box(no_face[100:400, 100:400]) is None
    face = fer[0]
    assert reframer(face) is face


def test_predict_reframes_by_default_and_not_when_told(detector, photo_faces):
    classifier = EmotionClassifier.load()
    reframer = Reframer(detector)
    gray, box = photo_faces[0]
    x, y, w, h = grow(box, 0.3, gray.shape[1], gray.shape[0])
    loose = gray[y : y + h, x : x + w]
    by_default = classifier.predict([loose])
    assert by_default == pytest.approx(classifier.predict([reframer(loose)], reframe=False))
    assert not np.allclose(by_default, classifier.predict([loose], reframe=False), atol=1e-3)
    tight = crop(gray, box)
    assert classifier.predict([tight]) == pytest.approx(classifier.predict([tight], reframe=False))
