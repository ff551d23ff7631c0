"""The runtime classifier with the shipped model: shapes, any face input, and the card check."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import read_image

from edge.vision.classifier import DEFAULT_MODEL, EmotionClassifier
from edge.vision.emotions import EMOTIONS
from edge.vision.litert import BACKENDS, BackendError, interpreter_class, interpreter_threads
from edge.vision.model_card import ModelError

FER = Path(__file__).parent / "fixtures" / "fer"


@pytest.fixture(scope="module")
def classifier() -> EmotionClassifier:
    return EmotionClassifier.load()


def fixture_faces(split: str) -> tuple[list[np.ndarray], np.ndarray]:
    faces, labels = [], []
    for label, name in enumerate(EMOTIONS):
        for file in sorted((FER / split / name).glob("*.jpg")):
            faces.append(read_image(file, cv2.IMREAD_GRAYSCALE))
            labels.append(label)
    return faces, np.array(labels)


def test_shipped_model_labels_and_probabilities(classifier):
    assert classifier.labels == EMOTIONS
    assert classifier.input_size == 48
    faces, _ = fixture_faces("test")
    probs = classifier.predict(np.stack(faces))
    assert probs.shape == (14, 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs >= 0).all()


def test_any_size_gray_or_bgr_gives_the_same_answer(classifier):
    faces, _ = fixture_faces("test")
    face = faces[6]  # a happy face
    big_bgr = cv2.cvtColor(cv2.resize(face, (192, 192), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2BGR)
    probs = classifier.predict([face, big_bgr])
    assert probs[0].argmax() == probs[1].argmax()
    assert classifier.predict(np.zeros((0, 48, 48), np.uint8)).shape == (0, 7)


def test_shipped_model_recognises_real_faces(classifier):
    """Fixture faces the model never trained on are FER PublicTest images; chance would be 1 in 7."""
    faces, labels = fixture_faces("test")
    accuracy = (classifier.predict(faces).argmax(axis=1) == labels).mean()
    assert accuracy >= 0.5, f"accuracy {accuracy:.2f} on fixture PublicTest faces"


def copy_model(tmp_path: Path) -> Path:
    model = tmp_path / "emotion_int8.tflite"
    shutil.copy(DEFAULT_MODEL, model)
    shutil.copy(DEFAULT_MODEL.with_suffix(".json"), model.with_suffix(".json"))
    return model


@pytest.mark.parametrize(
    ("faces", "message"),
    [
        (None, r"^faces: expected an \(N, H, W\[, C\]\) array or a list of crops, got NoneType$"),
        (np.zeros(5, np.uint8), r"^faces: .* got ndarray of shape \(5,\)$"),
        # a face in 0..1, as matplotlib and skimage give: it used to score as a black square, silently
        ([np.full((48, 48), 0.5, np.float32)], r"^face 0: expected a non-empty uint8 image array, got float32"),
        ([np.zeros((48, 48), np.uint8), np.zeros((48, 48, 2), np.uint8)], r"^face 1: .*got shape \(48, 48, 2\)$"),
    ],
    ids=["none", "1-d", "float", "2-channels"],
)
def test_predict_names_the_crop_that_is_not_a_uint8_image(classifier, faces, message):
    with pytest.raises(ValueError, match=message):
        classifier.predict(faces)


@pytest.mark.parametrize(("cpus", "expected"), [(1, 1), (2, 1), (4, 3), (16, 4)])
def test_zero_threads_spare_a_core_and_stop_at_four(cpus: int, expected: int) -> None:
    assert interpreter_threads(0, cpus=cpus) == expected
    assert interpreter_threads(2, cpus=cpus) == 2, "a number asked for is kept"


def test_card_rejects_a_model_that_is_not_its_own(tmp_path):
    model = copy_model(tmp_path)
    content = bytearray(model.read_bytes())
    content[-1] ^= 0xFF
    model.write_bytes(bytes(content))
    with pytest.raises(ModelError, match="does not match its card"):
        EmotionClassifier.load(model)


def test_a_card_without_a_field_names_the_field(tmp_path):
    model = copy_model(tmp_path)
    card = json.loads(model.with_suffix(".json").read_text())
    del card["sha256"]
    model.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"emotion_int8\.json: unreadable model card \(no 'sha256' field\)$"):
        EmotionClassifier.load(model)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": [*EMOTIONS, "contempt"]}, r"emotion_int8\.tflite: 7 outputs but its card lists 8 labels$"),
        ({"input": {"shape": [1, 64, 64, 1]}}, r"emotion_int8\.tflite: input .* does not match its card's"),
        ({"input": {"dtype": "uint8"}}, r"emotion_int8\.tflite: input .* does not match its card's"),
    ],
    ids=["labels", "input-shape", "input-dtype"],
)
def test_a_card_that_does_not_describe_its_model_is_refused(tmp_path, change, message):
    """The model's own bytes (its sha256 matches) with a card edited by hand: another label list would
    name every score wrongly, another input would be fed what the model never saw."""
    model = copy_model(tmp_path)
    card = json.loads(model.with_suffix(".json").read_text())
    for key, value in change.items():
        card[key] = {**card[key], **value} if isinstance(value, dict) else value
    model.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=message):
        EmotionClassifier.load(model)


def test_missing_card_and_missing_model(tmp_path):
    model = copy_model(tmp_path)
    model.with_suffix(".json").unlink()
    with pytest.raises(ModelError, match=r"emotion_int8\.tflite: model card not found \(.*emotion_int8\.json;"):
        EmotionClassifier.load(model)
    with pytest.raises(ModelError, match=r"nothing\.tflite: model file not found"):
        EmotionClassifier.load(tmp_path / "nothing.tflite")


def test_corrupt_model_with_matching_card(tmp_path):
    import hashlib

    model = copy_model(tmp_path)
    garbage = b"\x00" * 1024
    model.write_bytes(garbage)
    card = json.loads(model.with_suffix(".json").read_text())
    card["sha256"] = hashlib.sha256(garbage).hexdigest()
    model.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="not a usable TFLite model"):
        EmotionClassifier.load(model)


def test_classifier_never_imports_tensorflow():
    code = (
        "import sys, numpy as np\n"
        "from edge.vision.classifier import EmotionClassifier\n"
        "c = EmotionClassifier.load()\n"
        "c.predict(np.zeros((1, 48, 48), np.uint8))\n"
        "print(c.backend, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [out[0], "False"] and out[0] != "tensorflow"


def test_every_installed_backend_gives_the_same_probabilities():
    """In a subprocess: the tensorflow backend imports TensorFlow (the [dev] extra has it), which the rest of the
    suite must not see."""
    face = sorted((FER / "test" / "happy").glob("*.jpg"))[0]
    code = (
        "import numpy as np, cv2\n"
        "from edge.vision.classifier import EmotionClassifier\n"
        f"face = cv2.imread({str(face)!r}, cv2.IMREAD_GRAYSCALE)[None]\n"
        "for backend in ('ai_edge_litert', 'tensorflow'):\n"
        "    c = EmotionClassifier.load(backend=backend)\n"
        "    print(c.backend, *c.predict(face)[0])\n"
    )
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    rows = [line.split() for line in lines]
    assert [row[0] for row in rows] == ["ai_edge_litert", "tensorflow"]
    litert, tensorflow = (np.array(row[1:], float) for row in rows)
    assert litert.argmax() == EMOTIONS.index("happy")
    np.testing.assert_allclose(tensorflow, litert, atol=2 / 256)  # one int8 step either way, kernels may differ


def test_a_backend_without_an_interpreter_is_named(monkeypatch):
    monkeypatch.setitem(BACKENDS, "tensorflow", ("json", "lite.Interpreter"))
    with pytest.raises(BackendError, match=r"tensorflow: module 'json' has no attribute 'lite'.*pip install ai-edge"):
        interpreter_class("tensorflow")
