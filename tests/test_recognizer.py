"""EmotionRecognizer with the shipped model and the real Haar detector on the still fixtures (FER-2013 test
photos placed at known positions), checked against the classifier it is built from."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import read_image

from edge.pipeline import crop
from edge.recognizer import EmotionRecognizer
from edge.sources import Frame
from edge.vision.classifier import EmotionClassifier
from edge.vision.detector import Box, HaarDetector
from edge.vision.emotions import EMOTIONS
from edge.vision.model_card import ModelError
from edge.vision.tracker import iou

MEDIA = Path(__file__).resolve().parent / "fixtures" / "media"
# Where three_faces.jpg has its faces (x, y, side), as it was composed.
THREE_FACES = [(40, 60, 150), (250, 250, 140), (450, 110, 150)]


@pytest.fixture(scope="module")
def recognizer() -> EmotionRecognizer:
    return EmotionRecognizer()


@pytest.fixture(scope="module")
def three_faces() -> np.ndarray:
    return read_image(MEDIA / "three_faces.jpg")


def area(box: Box) -> int:
    return box[2] * box[3]


class SortedDetector:
    """The real Haar detector with its faces listed in an order of the test's choosing."""

    def __init__(self, key: Callable[[Box], int]) -> None:
        self.haar = HaarDetector()
        self.key = key

    def detect(self, frame: Frame) -> list[Box]:
        return sorted(self.haar.detect(frame), key=self.key)


def test_finds_the_three_faces_with_fer_shaped_results(recognizer, three_faces):
    faces = recognizer.detect_emotions(three_faces)
    assert len(faces) == 3
    assert [face["box"][0] for face in faces] == sorted(face["box"][0] for face in faces)  # left to right
    height, width = three_faces.shape[:2]
    for face in faces:
        assert set(face) == {"box", "emotions"}
        x, y, w, h = face["box"]
        assert all(type(v) is int for v in face["box"])
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= width and y + h <= height
        assert tuple(face["emotions"]) == EMOTIONS == recognizer.labels
        assert all(type(p) is float and 0 <= p <= 1 and round(p, 4) == p for p in face["emotions"].values())
        assert sum(face["emotions"].values()) == pytest.approx(1.0, abs=1e-3)
    # every real face has one box over it
    squares = [(x, y, side, side) for x, y, side in THREE_FACES]
    assert all(max(iou(face["box"], square) for face in faces) > 0.5 for square in squares)


def test_probabilities_are_the_classifiers_on_the_crop(recognizer, three_faces):
    classifier = EmotionClassifier.load()
    faces = recognizer.detect_emotions(three_faces)
    probs = classifier.predict([crop(three_faces, face["box"]) for face in faces], reframe=False)
    for face, row in zip(faces, probs):
        assert list(face["emotions"].values()) == [round(float(p), 4) for p in row]
    # the three faces do not all look alike to the model, so a mix-up of crops would show
    assert len({max(face["emotions"], key=face["emotions"].get) for face in faces}) > 1


def test_no_face(recognizer):
    image = cv2.imread(str(MEDIA / "no_face.jpg"))
    assert recognizer.detect_emotions(image) == []
    assert recognizer.top_emotion(image) == (None, None)


def test_one_face_top_emotion_is_its_best_score(recognizer):
    image = cv2.imread(str(MEDIA / "one_face.jpg"))
    [face] = recognizer.detect_emotions(image)
    label, score = recognizer.top_emotion(image)
    assert score == max(face["emotions"].values()) and face["emotions"][label] == score


def test_top_emotion_is_the_largest_faces_whatever_the_detector_order(three_faces):
    smallest_first = EmotionRecognizer(detector=SortedDetector(area))
    largest_first = EmotionRecognizer(detector=SortedDetector(lambda box: -area(box)))
    faces = smallest_first.detect_emotions(three_faces)
    assert [area(face["box"]) for face in faces] == sorted(area(face["box"]) for face in faces)  # detector order
    largest = faces[-1]["emotions"]
    expected = (max(largest, key=largest.get), max(largest.values()))
    assert max(faces[0]["emotions"], key=faces[0]["emotions"].get) != expected[0]  # the first face would differ
    assert smallest_first.top_emotion(three_faces) == expected
    assert largest_first.top_emotion(three_faces) == expected


@pytest.mark.parametrize(
    "convert",
    [
        lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY),
        lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[:, :, None],
        lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA),
    ],
    ids=["gray", "gray-1-channel", "bgra"],
)
def test_gray_and_bgra_give_the_same_answer_as_bgr(recognizer, three_faces, convert):
    found = recognizer.detect_emotions(three_faces)
    assert len(found) == 3 and recognizer.detect_emotions(convert(three_faces)) == found


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (str(MEDIA / "three_faces.jpg"), "uint8 image array .* got str"),
        (None, "got NoneType"),  # what cv2.imread returns for a file it cannot read
        (np.zeros((480, 640, 3), np.float32), "got float32 array of shape"),
        (np.zeros((0, 0, 3), np.uint8), r"got uint8 array of shape \(0, 0, 3\)"),
        (np.zeros(640, np.uint8), r"gray, BGR or BGRA image, got shape \(640,\)"),
        (np.zeros((48, 48, 2), np.uint8), r"got shape \(48, 48, 2\)"),
    ],
    ids=["path", "none", "float", "empty", "1-d", "2-channels"],
)
def test_bad_input_raises_a_one_line_value_error(recognizer, image, message):
    with pytest.raises(ValueError, match=message) as raised:
        recognizer.detect_emotions(image)
    assert "\n" not in str(raised.value)


def test_missing_model_names_the_file(tmp_path):
    missing = tmp_path / "nope.tflite"
    with pytest.raises(ModelError, match=f"{missing}: model file not found"):
        EmotionRecognizer(missing)


def test_edge_stays_light_and_the_recognizer_never_imports_tensorflow():
    code = (
        "import sys, cv2\n"
        "import edge\n"
        "light = 'edge.recognizer' not in sys.modules\n"
        "from edge.recognizer import EmotionRecognizer\n"
        f"EmotionRecognizer().detect_emotions(cv2.imread({str(MEDIA / 'one_face.jpg')!r}))\n"
        "print(light, 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "False"]
