"""EmotionClassifier: gray face crops in, one probability per emotion out.

A thin wrapper in the manner of opencv_zoo's models: it owns the interpreter, knows its input size
and backend, and does the quantisation arithmetic the int8 model needs; the benchmark beside it is
``emotion-edge bench --classifier``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.noise import stderr_to_log
from edge.vision.emotions import check_image, face_to_input
from edge.vision.litert import interpreter_class, interpreter_threads
from edge.vision.model_card import ModelCard, ModelError, TensorSpec, card_path, sha256_of
from edge.vision.reframe import default_reframer

# edge/models: in a checkout a link to models/ (where training and convert write), in a wheel the copy
# it carries (pyproject.toml's package data), so the shipped model is found either way.
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
DEFAULT_MODEL = MODELS_DIR / "emotion_int8.tflite"

log = logging.getLogger(__name__)


class EmotionClassifier:
    """Classifies face crops with a TFLite model (int8 or float) described by a model card."""

    def __init__(
        self, content: bytes, card: ModelCard, *, backend: str = "auto", num_threads: int = 1, name: str = "<model>"
    ) -> None:
        interpreter, self.backend = interpreter_class(backend)
        self.threads = interpreter_threads(num_threads)
        try:
            self._interpreter = interpreter(model_content=content, num_threads=self.threads)
            with stderr_to_log(log):  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." at every start
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{name}: not a usable TFLite model ({exc})") from None
        input_details = self._interpreter.get_input_details()[0]
        output_details = self._interpreter.get_output_details()[0]
        self._input = TensorSpec.from_details(input_details)
        self._output = TensorSpec.from_details(output_details)
        self._input_index = input_details["index"]
        self._output_index = output_details["index"]
        self._input_dtype = input_details["dtype"]
        if self._input.shape[1:] != card.input.shape[1:] or self._input.dtype != card.input.dtype:
            raise ModelError(f"{name}: input {self._input} does not match its card's {card.input}")
        if self._output.shape[-1] != len(card.labels):
            raise ModelError(f"{name}: {self._output.shape[-1]} outputs but its card lists {len(card.labels)} labels")
        self.card = card
        self.labels: tuple[str, ...] = card.labels
        self.input_size: int = self._input.shape[1]
        self.sha256 = card.sha256

    @classmethod
    def load(cls, path: str | Path | None = None, *, backend: str = "auto", num_threads: int = 1) -> EmotionClassifier:
        """Load a .tflite and its card (``<model>.json``); None loads the shipped model.

        The sha256 check is what stops a model from running with another model's labels.
        """
        model_path = Path(path) if path is not None else DEFAULT_MODEL
        try:
            content = model_path.read_bytes()
        except FileNotFoundError:
            raise ModelError(f"{model_path}: model file not found") from None
        except OSError as exc:
            raise ModelError(f"{model_path}: cannot read model ({exc.strerror})") from None
        card = ModelCard.of_model(model_path)
        digest = sha256_of(content)
        if digest != card.sha256:
            raise ModelError(
                f"{model_path}: sha256 {digest[:12]}… does not match its card {card_path(model_path)} "
                f"({card.sha256[:12]}…); copy the model together with its card"
            )
        return cls(content, card, backend=backend, num_threads=num_threads, name=str(model_path))

    def predict(self, faces: np.ndarray | Sequence[np.ndarray], *, reframe: bool = True) -> np.ndarray:
        """Probabilities (N, len(labels)) for N uint8 face crops of any size, gray or BGR.

        ``reframe``: each crop is first cut down to its face as the detector frames one (``edge.vision.reframe``),
        so crops from another detector or cut by hand are classified as well as the pipeline's own; crops the
        detector's boxes cut already (the pipeline's) pass False and are classified exactly as given.
        Raises ValueError naming the first crop that is not a uint8 image.
        """
        if not isinstance(faces, (np.ndarray, Sequence)) or (isinstance(faces, np.ndarray) and faces.ndim < 3):
            shape = f" of shape {faces.shape}" if isinstance(faces, np.ndarray) else ""
            raise ValueError(
                f"faces: expected an (N, H, W[, C]) array or a list of crops, got {type(faces).__name__}{shape}"
            )
        for i, face in enumerate(faces):
            check_image(face, f"face {i}")
        if len(faces) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        reframer = default_reframer() if reframe else None
        if reframer is not None:
            faces = [reframer(face) for face in faces]
        batch = np.stack([face_to_input(face, self.input_size) for face in faces])
        return np.stack([self._infer(face) for face in batch])

    def _infer(self, face: np.ndarray) -> np.ndarray:
        x = face.astype(np.float32)[None, :, :, None] / 255.0
        if self._input.scale:  # quantised input: the card's scale and zero point, not a guess
            limits = np.iinfo(self._input_dtype)
            x = np.clip(np.round(x / self._input.scale) + self._input.zero_point, limits.min, limits.max)
        self._interpreter.set_tensor(self._input_index, x.astype(self._input_dtype))
        self._interpreter.invoke()
        y = self._interpreter.get_tensor(self._output_index)[0].astype(np.float32)
        if self._output.scale:
            y = (y - self._output.zero_point) * self._output.scale
        return y / max(float(y.sum()), 1e-6)
