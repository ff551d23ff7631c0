"""Train the emotion CNN into a run folder that can be stopped and resumed at any epoch.

Everything a run needs to continue lives in its folder: the config it started with, the Keras
checkpoint (weights and optimiser state) written after every epoch and the history CSV, whose
row count is the number of finished epochs. Running the same command again picks up from there.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import keras
import numpy as np

from edge.vision.emotions import EMOTIONS
from training.data import Dataset, load_dataset
from training.model import build_model, resize
from training.report import classification_report, plot_history, write_evaluation

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.keras"
HISTORY = "history.csv"
FLOAT_MODEL = "model_float.keras"


class TrainError(Exception):
    """A run that cannot start as configured (unknown optimiser, an init model that does not fit)."""


@dataclass
class TrainConfig:
    data: str
    run_dir: str
    epochs: int = 36
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    # Class weights are (mean count / class count) ** power: 0 ignores the imbalance, 1 fully
    # inverts it. 0.5 lifts disgust's recall without sacrificing the overall accuracy.
    class_weight_power: float = 0.5
    widths: tuple[int, ...] = (32, 64, 128, 256)
    dense: int = 256
    dropout: float = 0.4
    # "adamw" is what the shipped model's first stage used from scratch; "sgd" (Nesterov momentum),
    # with erase=0.5, is its second stage, started from the first one's weights (+0.9 points).
    optimizer: str = "adamw"
    # Share of training faces that get a random patch erased, as a hand or glasses would: a
    # regulariser against this CNN's overfitting on FER-2013 (train accuracy outruns validation).
    erase: float = 0.0
    # A .keras model whose weights start the run: fine-tuning the shipped model on your own faces,
    # or a further training stage; one of other widths with as many stages is widened or pruned to
    # --widths/--dense (model.resize).
    # Empty: random initialisation.
    init: str = ""
    val_fraction: float = 0.1
    seed: int = 0

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        stored = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in stored.items() if k in known}
        values["widths"] = tuple(values.get("widths", cls.widths))
        return cls(**values)


def class_weights(labels: np.ndarray, power: float) -> np.ndarray:
    """Per-class loss weights, normalised so that the average sample weight is 1."""
    counts = np.bincount(labels, minlength=len(EMOTIONS)).astype(float)
    present = counts > 0
    weights = np.zeros(len(EMOTIONS))
    weights[present] = (counts[present].mean() / counts[present]) ** power
    return weights / (weights[labels].mean())


def learning_rate(epoch: int, config: TrainConfig) -> float:
    """Two epochs of linear warm-up, then cosine decay to zero at the last epoch."""
    warmup = min(2, config.epochs - 1)
    if epoch < warmup:
        return config.learning_rate * (epoch + 1) / (warmup + 1)
    progress = (epoch - warmup) / max(config.epochs - warmup, 1)
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))


def _augmenter(erase: float):
    """Random changes a camera makes anyway: mirror, tilt, distance, offset, light, occlusion."""
    from keras import layers

    steps = [
        layers.RandomFlip("horizontal"),
        layers.RandomRotation(0.05, fill_mode="reflect"),
        layers.RandomZoom(0.1, fill_mode="reflect"),
        layers.RandomTranslation(0.1, 0.1, fill_mode="reflect"),
        layers.RandomBrightness(0.15, value_range=(0.0, 1.0)),
        layers.RandomContrast(0.2),
    ]
    if erase > 0:
        # factor (p, p): erase with probability p; scale: the patch covers 2-20% of the face.
        steps.append(layers.RandomErasing(factor=(erase, erase), scale=(0.02, 0.2), value_range=(0.0, 1.0)))
    return keras.Sequential(steps, name="augment")


def _optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(config.learning_rate, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay)
    raise TrainError(f"optimizer: {config.optimizer!r} is not one of adamw, sgd")


def _initial_model(config: TrainConfig) -> keras.Model:
    model = build_model(config.widths, config.dense, config.dropout)
    if config.init:
        if not Path(config.init).is_file():
            raise TrainError(f"init model {config.init}: no such file")
        source = keras.models.load_model(config.init, compile=False)
        try:
            if [w.shape for w in source.weights] == [w.shape for w in model.weights]:
                model.set_weights(source.get_weights())
            else:
                resize(source, model)
                log.info("resized %s to --widths %s --dense %d", config.init, _joined(config.widths), config.dense)
        except ValueError as exc:
            raise TrainError(
                f"init model {config.init} does not fit --widths {_joined(config.widths)} --dense {config.dense}: {exc}"
            ) from None
        log.info("starting from the weights of %s", config.init)
    return model


def _datasets(dataset: Dataset, config: TrainConfig):
    import tensorflow as tf

    k = len(EMOTIONS)
    weights = class_weights(dataset.train.labels, config.class_weight_power).astype("float32")
    augment = _augmenter(config.erase)

    def scale(images):
        return tf.cast(images[..., None], tf.float32) / 255.0

    train = (
        tf.data.Dataset.from_tensor_slices((dataset.train.images, dataset.train.labels))
        .shuffle(len(dataset.train), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .map(
            lambda x, y: (
                tf.clip_by_value(augment(scale(x), training=True), 0.0, 1.0),
                tf.one_hot(y, k),
                tf.gather(weights, y),
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .prefetch(tf.data.AUTOTUNE)
    )
    val = (
        tf.data.Dataset.from_tensor_slices((dataset.val.images, dataset.val.labels))
        .batch(256)
        .map(lambda x, y: (scale(x), tf.one_hot(y, k)))
        .prefetch(tf.data.AUTOTUNE)
    )
    return train, val


def _finished_epochs(run_dir: Path) -> int:
    history = run_dir / HISTORY
    if not history.exists():
        return 0
    return max(len(history.read_text().strip().splitlines()) - 1, 0)


def train(config: TrainConfig) -> dict:
    """Train (or resume) the run in ``config.run_dir`` and write its report; returns report.json."""
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    dataset = load_dataset(config.data, config.val_fraction, config.seed)
    log.info(
        "data: %d training faces from %s, %d validation faces from %s, %d unreadable skipped",
        len(dataset.train),
        dataset.train.origin,
        len(dataset.val),
        dataset.val.origin,
        len(dataset.train.skipped) + len(dataset.val.skipped),
    )
    done = _finished_epochs(run_dir)
    checkpoint = run_dir / CHECKPOINT
    if done and checkpoint.exists():
        model = keras.models.load_model(checkpoint)
        log.info("resuming %s after epoch %d of %d", run_dir, done, config.epochs)
    else:
        done = 0
        (run_dir / HISTORY).unlink(missing_ok=True)
        model = _initial_model(config)
        model.compile(
            optimizer=_optimizer(config),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        )
    # only now: a stored config is what a rerun resumes with, so one that cannot start is not kept
    config.save(run_dir / "config.json")
    train_ds, val_ds = _datasets(dataset, config)
    if done < config.epochs:
        model.fit(
            train_ds,
            validation_data=val_ds,
            initial_epoch=done,
            shuffle=False,  # tf.data already reshuffles every epoch
            epochs=config.epochs,
            verbose=1 if sys.stdout.isatty() else 2,
            callbacks=[
                keras.callbacks.LearningRateScheduler(lambda epoch: learning_rate(epoch, config)),
                _EpochSeconds(),
                keras.callbacks.CSVLogger(str(run_dir / HISTORY), append=True),
                keras.callbacks.ModelCheckpoint(str(checkpoint)),
            ],
        )
    save_float_model(model, run_dir / FLOAT_MODEL)
    return _write_report(model, dataset, config, run_dir)


def save_float_model(model: keras.Model, path: Path) -> None:
    """Save weights and graph without the optimiser's state: a third of the size, and all that
    conversion, evaluation or a warm start needs (the per-epoch checkpoint keeps the optimiser)."""
    copy = keras.Model.from_config(model.get_config())  # clone_model would keep the compile state
    copy.set_weights(model.get_weights())
    copy.save(path)


class _EpochSeconds(keras.callbacks.Callback):
    """Adds the epoch's wall-clock seconds to the logs, so the history CSV records the speed."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["seconds"] = round(time.monotonic() - self.start, 1)


def _stages(run_dir: Path, config: TrainConfig) -> list[Path]:
    """The run folders this run grew from, earliest first, ending with ``run_dir``: each ``init``
    model that sits in a run folder with its own history continues the chain."""
    stages, init = [run_dir], config.init
    while init and (Path(init).parent / HISTORY).exists() and Path(init).parent not in stages:
        earlier = Path(init).parent
        stages.insert(0, earlier)
        stored = earlier / "config.json"
        init = json.loads(stored.read_text()).get("init", "") if stored.exists() else ""
    return stages


def _history(run_dir: Path) -> list[dict]:
    with (run_dir / HISTORY).open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write_report(model, dataset: Dataset, config: TrainConfig, run_dir: Path) -> dict:
    probs = model.predict(dataset.val.images[..., None].astype("float32") / 255.0, batch_size=256, verbose=0)
    evaluation = classification_report(dataset.val.labels, probs.argmax(axis=1))
    write_evaluation(evaluation, run_dir, "validation", f"float model on {Path(dataset.val.origin).name}")
    stages = _stages(run_dir, config)
    plot_history([stage / HISTORY for stage in stages], run_dir / "curves.png")
    stage_epochs = [len(_history(stage)) for stage in stages]
    history = _history(run_dir)
    seconds = [float(r["seconds"]) for r in history if r.get("seconds")]
    report = {
        "labels": list(EMOTIONS),
        "config": asdict(config),
        "train": {
            "faces": len(dataset.train),
            "origin": dataset.train.origin,
            "class_counts": dataset.train.class_counts(),
        },
        "validation": {
            "faces": len(dataset.val),
            "origin": dataset.val.origin,
            "class_counts": dataset.val.class_counts(),
        },
        "skipped_images": dataset.train.skipped + dataset.val.skipped,
        "epochs": len(history),
        # with --init from another run: that run's epochs too, so the report says what the weights saw
        "stages": [{"run_dir": str(stage), "epochs": n} for stage, n in zip(stages, stage_epochs)],
        "total_epochs": sum(stage_epochs),
        "seconds_per_epoch": round(float(np.mean(seconds)), 1) if seconds else None,
        "cpu_threads": os.cpu_count(),
        "parameters": int(model.count_params()),
        "float_accuracy": evaluation["accuracy"],
        "float_macro_f1": evaluation["macro_f1"],
        "evaluation": evaluation,
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info(
        "float accuracy on %s: %.2f%% (macro F1 %.3f); report in %s",
        dataset.val.origin,
        100 * evaluation["accuracy"],
        evaluation["macro_f1"],
        run_dir,
    )
    return report


def _joined(widths: tuple[int, ...]) -> str:
    return ",".join(map(str, widths))
