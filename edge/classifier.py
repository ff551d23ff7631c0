"""``edge.classifier`` is part of the public Python API; the classifier itself lives in ``edge.vision``."""

from edge.vision.classifier import DEFAULT_MODEL, MODELS_DIR, EmotionClassifier

__all__ = ["DEFAULT_MODEL", "MODELS_DIR", "EmotionClassifier"]
