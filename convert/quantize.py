"""Full-integer int8 quantisation that checks its own result before writing anything.

The int8 model is evaluated against the float model on the same held-out faces; if it loses more
than ``max_drop`` accuracy points nothing is written, so a bad calibration can never replace the
model a Pi is running.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# No TensorFlow at import: `python -m convert` answers --help and a wrong path without its seconds of start-up.
from edge.tools.outputs import OutputError, check_output
from edge.vision.classifier import EmotionClassifier
from edge.vision.emotions import EMOTIONS, FACE_SIZE
from edge.vision.model_card import ModelCard, TensorSpec, card_path, sha256_of
from training.data import Dataset, check_source, keras_input, load_dataset
from training.evaluate import predict_keras
from training.files import check_keras_file, float_model_path, load_keras_model
from training.quiet import held_output
from training.report import classification_report, write_evaluation

log = logging.getLogger(__name__)

TRAINING_RECORD = ("config.json", "history.csv", "curves.png", "report.json")


class ConversionError(RuntimeError):
    """Quantisation failed or lost too much accuracy; nothing was written."""


@dataclass
class ConvertConfig:
    model: str  # a run folder or a .keras file
    data: str
    out: str = "models/emotion_int8.tflite"
    calibration: int = 1000
    max_drop: float = 1.0  # accuracy points
    flip_average: bool = False  # +0.3 to +0.7 points on PublicTest here, at twice the cost per face
    seed: int = 0


def with_flip_average(model):
    """Average the model's scores on the face and its mirror image, inside one graph.

    Faces are left-right symmetric in meaning, so the mirror is a free second opinion; baking it
    into the model keeps the runtime a single invoke and the card's accuracy honest.
    """
    import keras

    inputs = keras.Input(model.input_shape[1:], name="face")
    mirrored = keras.ops.flip(inputs, axis=2)
    scores = keras.layers.Average(name="flip_average")([model(inputs), model(mirrored)])
    return keras.Model(inputs, scores, name=f"{model.name}_flip_avg")


def calibration_faces(dataset: Dataset, count: int, seed: int) -> np.ndarray:
    """A class-stratified random draw from the training faces, so rare classes shape the ranges too."""
    rng = np.random.default_rng(seed)
    labels = dataset.train.labels
    picked = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        share = max(1, round(count * len(idx) / len(labels)))
        picked.append(rng.choice(idx, size=min(share, len(idx)), replace=False))
    return dataset.train.images[np.concatenate(picked)]


def quantize(model, faces: np.ndarray) -> bytes:
    import tensorflow as tf

    def representative():
        for face in faces:
            yield [keras_input(face[None])]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    # Its export prints a line per variable; the progress lines around it are convert's. It also warns that
    # "statistics for quantized inputs were expected": those are the old converter's, and the input's scale
    # and zero point come from the representative faces here.
    with held_output(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs", category=UserWarning)
        return converter.convert()


def convert(config: ConvertConfig) -> dict:
    """Quantise, verify against float, then write the .tflite and its card; returns the card."""
    source = Path(config.model)
    keras_path = float_model_path(source)
    out = Path(config.out)
    # Every path is checked before TensorFlow loads (seconds), so a wrong one is refused at once.
    if not keras_path.exists():
        raise ConversionError(f"{keras_path}: float model not found (train first, or name a .keras file)")
    check_keras_file(keras_path)
    check_source(config.data)
    try:
        check_output(out, (".tflite",), make_folders=True)  # the folders are made only once the model has passed
    except OutputError as exc:
        raise ConversionError(f"--out {exc}") from None
    model = load_keras_model(keras_path)
    _check_shape(model, keras_path)
    if config.flip_average:
        model = with_flip_average(model)
    dataset = load_dataset(config.data)
    faces = calibration_faces(dataset, config.calibration, config.seed)
    log.info("quantising %s with %d calibration faces", keras_path, len(faces))
    content = quantize(model, faces)

    float_eval = classification_report(dataset.val.labels, predict_keras(model, dataset.val.images).argmax(1))
    draft = _card(content, {}, placeholder=True)
    int8 = EmotionClassifier(content, draft, name="int8 model")
    int8_eval = classification_report(dataset.val.labels, int8.predict(dataset.val.images).argmax(1))
    drop = 100 * (float_eval["accuracy"] - int8_eval["accuracy"])
    log.info(
        "accuracy on %s: float %.2f%%, int8 %.2f%% (drop %.2f points)",
        dataset.val.origin,
        100 * float_eval["accuracy"],
        100 * int8_eval["accuracy"],
        drop,
    )
    if drop > config.max_drop:
        raise ConversionError(
            f"int8 model loses {drop:.2f} accuracy points (> {config.max_drop}) on {dataset.val.origin}; "
            f"nothing written"
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    run_report = _run_report(source)
    info = {
        "model": out.name,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "preprocessing": {
            "color": "gray (BGR/BGRA converted with OpenCV)",
            "size": [FACE_SIZE, FACE_SIZE],
            "resize": "cv2.INTER_AREA when shrinking, cv2.INTER_LINEAR when enlarging",
            "scale": "pixel / 255, then quantised with the input scale and zero point",
            "flip_average": config.flip_average,
            "crop": "face box from OpenCV's Haar frontal-face cascade",
        },
        "accuracy": {
            "split": dataset.val.origin,
            "faces": len(dataset.val),
            "float": float_eval["accuracy"],
            "int8": int8_eval["accuracy"],
            "float_per_class": float_eval["per_class"],
            "int8_per_class": int8_eval["per_class"],
            "int8_confusion_matrix": int8_eval["confusion_matrix"],
        },
        "training": {
            "data": dataset.train.origin,
            "faces": len(dataset.train),
            "source_model": str(keras_path),
            "epochs": run_report.get("epochs"),
            "total_epochs": run_report.get("total_epochs", run_report.get("epochs")),
            "seconds_per_epoch": run_report.get("seconds_per_epoch"),
            "parameters": run_report.get("parameters"),
            "config": run_report.get("config"),
            **({"soup": run_report["soup"]} if "soup" in run_report else {}),
        },
        "calibration": {"faces": len(faces), "from": "training split, class-stratified", "seed": config.seed},
    }
    card = _card(content, info)
    out.write_bytes(content)
    card.write(card_path(out))
    EmotionClassifier.load(out)  # the runtime's own check, on the files as written
    report_dir = out.parent / "report"
    write_evaluation(int8_eval, report_dir, "int8", f"int8 model on {dataset.val.origin}")
    write_evaluation(float_eval, report_dir, "float", f"float model on {dataset.val.origin}")
    _copy_training_report(keras_path.parent, report_dir)
    log.info("wrote %s (%d KiB) and %s", out, len(content) // 1024, card_path(out))
    return card.to_json()


def _check_shape(model, path: Path) -> None:
    """ConversionError unless ``model`` takes gray faces of the runtime's size and scores every emotion."""
    wanted_input, wanted_output = (FACE_SIZE, FACE_SIZE, 1), len(EMOTIONS)
    takes, gives = getattr(model, "input_shape", None), getattr(model, "output_shape", None)
    fits = isinstance(takes, tuple) and tuple(takes[1:]) == wanted_input
    if not (fits and isinstance(gives, tuple) and gives[-1] == wanted_output):
        raise ConversionError(
            f"{path}: not an emotion model: it takes {takes} and gives {gives}, "
            f"expected (None, {FACE_SIZE}, {FACE_SIZE}, 1) faces and {wanted_output} scores"
        )


def _card(content: bytes, info: dict, placeholder: bool = False) -> ModelCard:
    """A card read off the model itself, so shapes and quantisation parameters cannot drift."""
    from edge.vision.litert import interpreter_class

    interpreter_cls, _ = interpreter_class()
    interpreter = interpreter_cls(model_content=content)
    return ModelCard(
        labels=EMOTIONS,
        sha256="" if placeholder else sha256_of(content),
        input=TensorSpec.from_details(interpreter.get_input_details()[0]),
        output=TensorSpec.from_details(interpreter.get_output_details()[0]),
        info=info,
    )


def _copy_training_report(run_dir: Path, report_dir: Path) -> None:
    """Ship the training run's record beside the model, so a Pi's models/ explains itself; a run
    started from an earlier run's model (``--init``) brings that stage's config and history too."""
    for name in TRAINING_RECORD:
        if (run_dir / name).exists():
            shutil.copy(run_dir / name, report_dir / (name if name != "report.json" else "training_report.json"))
    earlier = _run_report(run_dir).get("stages", [])[:-1]
    for number, stage in enumerate(earlier, start=1):
        for name in ("config.json", "history.csv"):
            if (Path(stage["run_dir"]) / name).exists():
                shutil.copy(Path(stage["run_dir"]) / name, report_dir / f"stage{number}_{name}")


def _run_report(source: Path) -> dict:
    report = source / "report.json" if source.is_dir() else source.parent / "report.json"
    return json.loads(report.read_text()) if report.exists() else {}
