"""Evaluate any model, Keras or TFLite, on any split with the same metrics and pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data import keras_input, load_split
from training.report import classification_report, write_evaluation


def predict_keras(model, images: np.ndarray) -> np.ndarray:
    """Keras model probabilities for (N, 48, 48) uint8 faces, scaled as in training."""
    return model.predict(keras_input(images), batch_size=256, verbose=0)


def predict_file(model_path: str | Path, images: np.ndarray) -> np.ndarray:
    """Probabilities from a .keras file, or a .tflite through the edge runtime's own classifier.

    Going through EmotionClassifier means a TFLite score measures exactly what the Pi will do,
    preprocessing and card check included.
    """
    model_path = Path(model_path)
    if not model_path.exists():
        raise FileNotFoundError(f"{model_path}: model file not found")
    if model_path.suffix == ".tflite":
        from edge.vision.classifier import EmotionClassifier

        return EmotionClassifier.load(model_path).predict(images)
    from training.files import load_keras_model

    return predict_keras(load_keras_model(model_path), images)


def evaluate(model_path: str | Path, data: str | Path, split: str = "test", out: Path | None = None) -> dict:
    faces = load_split(data, split)
    report = classification_report(faces.labels, predict_file(model_path, faces.images).argmax(axis=1))
    report["model"] = str(model_path)
    report["data"] = faces.origin
    report["skipped_images"] = len(faces.skipped)
    if out is not None:
        write_evaluation(report, out, "evaluation", f"{Path(model_path).name} on {faces.origin}")
    return report
