"""Model files, known without TensorFlow: where a run folder keeps its float model, and a .keras file told
from one that is missing its parts or is not a model at all.

Kept apart from the training code so that ``python -m convert`` and ``python -m training`` refuse a
bad path at once, before TensorFlow's seconds of start-up, and so that a corrupt file is named in one
line (Keras says "File not found" of a .keras file it cannot open as a zip archive).
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path

from edge.vision.model_card import ModelError
from training.config import TrainError
from training.quiet import import_tensorflow

FLOAT_MODEL = "model_float.keras"
# What every .keras archive Keras 3 writes holds: the graph, and the weights in one of two forms.
KERAS_CONFIG = "config.json"
KERAS_WEIGHTS = ("model.weights.h5", "model.weights.npz")
LEGACY_SUFFIXES = (".h5", ".hdf5")  # Keras' HDF5 format, which load_model still reads


def float_model_path(source: str | Path) -> Path:
    """A run folder's final float model, or the .keras file named: what convert and soup take."""
    path = Path(source)
    return path / FLOAT_MODEL if path.is_dir() else path


def check_keras_file(path: Path) -> None:
    """ModelError naming ``path`` unless it is a file that looks like a Keras model: a zip archive with a
    model's parts (or a legacy .h5 file, which only loading can tell). Reads a few bytes, no TensorFlow."""
    if not path.is_file():
        raise ModelError(f"{path}: not a Keras model (not a file)")
    if path.suffix.lower() in LEGACY_SUFFIXES:
        return
    if path.suffix.lower() != ".keras":
        raise ModelError(f"{path}: not a Keras model (a .keras file is expected)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [KERAS_CONFIG] if KERAS_CONFIG not in names else []
            missing += [] if names.intersection(KERAS_WEIGHTS) else [KERAS_WEIGHTS[0]]
            config = None if missing else json.loads(archive.read(KERAS_CONFIG))
    except zipfile.BadZipFile:
        raise ModelError(f"{path}: not a Keras model (not a zip archive, as .keras files are)") from None
    except (OSError, EOFError, ValueError, zlib.error) as exc:  # unreadable, a broken member, config.json not JSON
        raise ModelError(f"{path}: not a Keras model ({_one_line(exc)})") from None
    if missing:
        raise ModelError(f"{path}: not a Keras model (a zip archive without {' and '.join(missing)})")
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelError(f"{path}: not a Keras model (its config.json describes no model)")


def soup_sources(sources: list[str]) -> list[Path]:
    """The float models a soup of ``sources`` (run folders or .keras files) averages, each checked to be there
    and to look like a model; TrainError for fewer than two."""
    if len(sources) < 2:
        raise TrainError("a soup needs at least two models")
    paths = [float_model_path(source) for source in sources]
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path}: model file not found")
        check_keras_file(path)
    return paths


def load_keras_model(path: Path, **options):
    """``keras.models.load_model(path, **options)``, with a file that is not a model (or one Keras cannot
    rebuild) a ModelError naming it, in one line."""
    check_keras_file(path)
    import_tensorflow()
    import keras

    try:
        return keras.models.load_model(path, **options)
    except Exception as exc:  # Keras raises what its parts raise: ValueError, KeyError, OSError from h5py, ...
        raise ModelError(f"{path}: not a Keras model ({_one_line(exc)})") from None


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, cut to ``limit`` characters: Keras' messages run over several lines."""
    text = " ".join(str(exc).split()) or "no detail"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}"
