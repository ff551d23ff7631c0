"""EmotionRecognizer: the ``fer`` package's ``detect_emotions``/``top_emotion`` API over the Pi runtime's parts.

For scripts and notebooks that have a picture and want emotions, without a config, a tracker or MQTT.
Import it from here (``from edge.recognizer import EmotionRecognizer``); ``edge`` itself stays light to import.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.pipeline import crop
from edge.sources import Frame
from edge.vision.classifier import EmotionClassifier
from edge.vision.detector import Box, Detector, create_detector
from edge.vision.emotions import check_image, to_gray


class EmotionRecognizer:
    """The service's detector and classifier, without its smoothing: each call judges one picture on its own."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        detector: Detector | None = None,
        backend: str = "auto",
        num_threads: int = 1,
    ) -> None:
        """Load everything now, so a bad model (ModelError) or cascade (DetectorError) fails here, naming the file,
        rather than on the first picture."""
        self.classifier = EmotionClassifier.load(model, backend=backend, num_threads=num_threads)
        self.detector = detector if detector is not None else create_detector()

    @property
    def labels(self) -> tuple[str, ...]:
        """The model card's labels: the key order of every ``emotions`` dict."""
        return self.classifier.labels

    def detect_emotions(self, image: np.ndarray) -> list[dict]:
        """One ``{"box": (x, y, w, h), "emotions": {label: probability}}`` per face: ``fer``'s shape, so code
        written for ``fer`` works unchanged. Faces come left to right (the detector's order).

        ``image`` is an array as from ``cv2.imread`` (BGR, BGRA or gray uint8), not a path, so frames from any
        source can be passed. It is made gray once up front: the detector and the model only see gray, and it
        makes the three layouts give identical answers.
        """
        gray = to_gray(check_image(image))
        boxes: list[Box] = self.detector.detect(Frame(gray, gray, 0, 0.0))
        probs = self.classifier.predict([crop(gray, box) for box in boxes], reframe=False)
        return [
            {
                "box": tuple(int(v) for v in box),
                "emotions": {label: round(float(p), 4) for label, p in zip(self.labels, row)},
            }
            for box, row in zip(boxes, probs)
        ]

    def top_emotion(self, image: np.ndarray) -> tuple[str, float] | tuple[None, None]:
        """(label, probability) of the largest face, or (None, None) without one.

        ``fer`` takes the first face, which is wherever the detector happened to list it; the largest is the
        person nearest the camera, the one a kiosk or a mirror is talking to.
        """
        faces = self.detect_emotions(image)
        if not faces:
            return None, None
        largest = max(faces, key=lambda face: face["box"][2] * face["box"][3])
        return max(largest["emotions"].items(), key=lambda item: item[1])
