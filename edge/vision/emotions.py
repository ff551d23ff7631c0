"""The emotion labels and the face preprocessing shared by training, conversion and the runtime.

Training and the Pi must agree bit for bit on how a face becomes model input, so both import it
from here (this module needs only numpy and OpenCV, never TensorFlow).
"""

from __future__ import annotations

import cv2
import numpy as np

# FER-2013's canonical order; label index i in every dataset, model and payload means EMOTIONS[i].
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

FACE_SIZE = 48


def check_image(image: object, what: str = "image") -> np.ndarray:
    """``image`` itself if it is a non-empty gray, BGR or BGRA uint8 array, else a one-line ValueError
    saying what it is: a float image in 0..1 (as from matplotlib or skimage) would otherwise be taken for
    a nearly black one and scored as such, without a word."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{what}: expected a uint8 image array (as from cv2.imread), got {type(image).__name__}")
    if image.dtype != np.uint8 or image.size == 0:
        raise ValueError(
            f"{what}: expected a non-empty uint8 image array, got {image.dtype} array of shape {image.shape}"
        )
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"{what}: expected a gray, BGR or BGRA image, got shape {image.shape}")
    return image


def to_gray(image: np.ndarray) -> np.ndarray:
    """Return a 2-D uint8 gray image whatever the source's channels (gray, BGR or BGRA)."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    raise ValueError(f"expected a gray, BGR or BGRA image, got shape {image.shape}")


def face_to_input(face: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """Resize a face crop of any size to the model's square gray input (uint8, size x size).

    INTER_AREA when shrinking avoids the aliasing that makes big camera crops look unlike the 48x48
    training faces; INTER_LINEAR when enlarging small, distant faces.
    """
    gray = to_gray(face)
    if gray.shape == (size, size):
        return gray
    shrinking = gray.shape[0] >= size and gray.shape[1] >= size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(gray, (size, size), interpolation=interpolation)
