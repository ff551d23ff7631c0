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
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np

from edge.vision.emotions import EMOTIONS
from training.config import PRECISIONS, TrainConfig, TrainError
from training.data import Dataset, load_dataset
from training.evaluate import predict_keras
from training.files import FLOAT_MODEL, load_keras_model
from training.model import build_model, plain_copy, resize
from training.report import classification_report, plot_history, write_evaluation

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.keras"
BEST_CHECKPOINT = "best.keras"  # the epoch of highest validation accuracy, kept beside the last
HISTORY = "history.csv"
FRAMED = "framed.npz"  # --framed: every training face as the pipeline would crop it, made once per run


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


def camera_degrade(face, probability: float):
    """What a Pi camera and a Haar box do to a face that FER-2013's crops never show, each effect
    with even odds on the share ``probability`` of faces: a face of 16-48 px scaled up to the
    model's input, lens blur, dim, uneven or gamma-bent light, sensor noise and JPEG blocks.
    ``face``: one (48, 48, 1) float32 image in [0, 1]; the result has the same shape and range."""
    import tensorflow as tf

    size = face.shape[0]

    def coin(odds: float = 0.5):
        return tf.random.uniform([]) < odds

    def low_resolution(x):
        side = tf.random.uniform([], 16, size + 1, dtype=tf.int32)
        small = tf.image.resize(x, tf.stack([side, side]), method="area")
        return tf.image.resize(small, [size, size], method="bilinear")

    def blur(x):
        sigma = tf.random.uniform([], 0.5, 1.5)
        taps = tf.exp(-0.5 * (tf.range(-2.0, 3.0) / sigma) ** 2)
        taps /= tf.reduce_sum(taps)
        kernel = tf.reshape(taps[:, None] * taps[None, :], [5, 5, 1, 1])
        return tf.nn.conv2d(tf.pad(x, [[2, 2], [2, 2], [0, 0]], "SYMMETRIC")[None], kernel, 1, "VALID")[0]

    def light(x):
        ramp = tf.linspace(-1.0, 1.0, size)
        angle = tf.random.uniform([], 0.0, 6.2832)
        gradient = tf.cos(angle) * ramp[None, :, None] + tf.sin(angle) * ramp[:, None, None]
        gamma = tf.exp(tf.random.uniform([], -0.7, 0.7))
        gain = tf.random.uniform([], 0.5, 1.0) * (1.0 + tf.random.uniform([], 0.0, 0.5) * gradient)
        return gain * tf.pow(tf.maximum(x, 1e-4), gamma)

    def noise(x):
        return x + tf.random.normal(tf.shape(x), stddev=tf.random.uniform([], 0.01, 0.04))

    def jpeg(x):
        return tf.image.random_jpeg_quality(tf.clip_by_value(x, 0.0, 1.0), 15, 80)

    x = face
    for step in (low_resolution, blur, light, noise, jpeg):
        x = tf.cond(coin(probability) & coin(), lambda step=step, x=x: step(x), lambda x=x: x)
        x = tf.ensure_shape(x, face.shape)
    return tf.clip_by_value(x, 0.0, 1.0)


def mixup(images, labels, weights, alpha: float):
    """Each face of a batch blended with another face of the same batch, its one-hot label and its
    class weight with the other's by the same share; the share each face keeps is drawn from
    Beta(alpha, alpha) and is the larger of the two, so every face stays mostly itself."""
    import tensorflow as tf

    n = tf.shape(images)[0]
    a, b = tf.random.gamma([n], alpha), tf.random.gamma([n], alpha)
    keep = tf.maximum(a, b) / (a + b)
    keep = tf.where(tf.math.is_finite(keep), keep, 1.0)  # both draws underflowed to 0: the face unmixed
    other = tf.random.shuffle(tf.range(n))

    def blend(x):
        share = tf.reshape(keep, [-1] + [1] * (len(x.shape) - 1))
        return share * x + (1 - share) * tf.gather(x, other)

    return blend(images), blend(labels), blend(weights)


def _augmenter(erase: float, camera: float):
    """Random changes a camera makes anyway: mirror, tilt, distance, offset, light, occlusion. With the
    camera model on, the box moves and scales as much as Haar's does between frames (about 15%)."""
    from keras import layers

    jitter = 0.15 if camera > 0 else 0.1
    steps = [
        layers.RandomFlip("horizontal"),
        layers.RandomRotation(0.05, fill_mode="reflect"),
        layers.RandomZoom(jitter, fill_mode="reflect"),
        layers.RandomTranslation(jitter, jitter, fill_mode="reflect"),
        layers.RandomBrightness(0.15, value_range=(0.0, 1.0)),
        layers.RandomContrast(0.2),
    ]
    if erase > 0:
        # factor (p, p): erase with probability p; scale: the patch covers 2-20% of the face.
        steps.append(layers.RandomErasing(factor=(erase, erase), scale=(0.02, 0.2), value_range=(0.0, 1.0)))
    return keras.Sequential(steps, name="augment")


def _optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    average = {"use_ema": True, "ema_momentum": config.average} if config.average > 0 else {}
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(
            config.learning_rate, momentum=0.9, nesterov=True, weight_decay=config.weight_decay, **average
        )
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay, **average)
    raise TrainError(f"optimizer: {config.optimizer!r} is not one of adamw, sgd")


# CPU flags (Linux's /proc/cpuinfo) of instructions that multiply bfloat16: Intel's AMX, and AVX-512's
# dot products (AMD since Zen 4, Intel since Cooper Lake)
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def resolve_precision(requested: str) -> str:
    """``requested``, with "auto" made bfloat16 where the CPU multiplies it in hardware and no GPU is
    visible, float32 elsewhere: without such instructions, bfloat16 on a CPU is emulated and far slower."""
    if requested != "auto":
        if requested not in PRECISIONS:
            raise TrainError(f"precision: {requested!r} is not one of auto, {', '.join(PRECISIONS)}")
        return requested
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "float32"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no way to ask the CPU here
        return "float32"
    return "bfloat16" if multiplies_bfloat16(flags) else "float32"


def multiplies_bfloat16(cpuinfo: str) -> bool:
    """Whether a CPU whose /proc/cpuinfo reads ``cpuinfo`` has bfloat16 multiply instructions."""
    flags = {word for line in cpuinfo.splitlines() if line.startswith("flags") for word in line.split()}
    return bool(flags & BF16_FLAGS)


def _initial_model(config: TrainConfig, precision: str) -> keras.Model:
    model = build_model(config.widths, config.dense, config.dropout, precision=precision)
    if config.init:
        if not Path(config.init).is_file():
            raise TrainError(f"init model {config.init}: no such file")
        source = load_keras_model(Path(config.init), compile=False)
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


def _framed_faces(dataset: Dataset, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """The training faces as the pipeline would crop them from a camera's frames (the original where the
    detector misses one), and which were found: made once and kept in the run folder for a resume."""
    path = Path(config.run_dir) / FRAMED
    if path.exists():
        stored = np.load(path)
        if stored["framed"].shape == dataset.train.images.shape:
            return stored["framed"], stored["found"]
    from training.framing import frame_faces

    log.info("drawing %d training faces into scenes for --framed (once per run)", len(dataset.train))
    framed, found = frame_faces(
        dataset.train.images, config.seed, workers=os.cpu_count() or 1, margin=config.framed_margin
    )
    np.savez_compressed(path, framed=framed, found=found)
    log.info("the detector found %d of %d drawn faces; %s", found.sum(), len(found), path)
    return framed, found


def _datasets(dataset: Dataset, config: TrainConfig):
    import tensorflow as tf

    k = len(EMOTIONS)
    weights = class_weights(dataset.train.labels, config.class_weight_power).astype("float32")
    augment = _augmenter(config.erase, config.camera)

    def scale(images):  # data.keras_input, as a TensorFlow op
        return tf.cast(images[..., None], tf.float32) / 255.0

    if config.framed > 0:
        framed, found = _framed_faces(dataset, config)

        def pick(clean, other, was_found, y):  # each epoch a new draw of which faces come framed
            return tf.where(was_found & (tf.random.uniform([]) < config.framed), other, clean), y

        faces = (dataset.train.images, framed, found, dataset.train.labels)
        train = tf.data.Dataset.from_tensor_slices(faces).map(pick)
    else:
        train = tf.data.Dataset.from_tensor_slices((dataset.train.images, dataset.train.labels))
    train = train.shuffle(len(dataset.train), seed=config.seed, reshuffle_each_iteration=True)
    if config.camera > 0:
        train = train.map(
            lambda x, y: (camera_degrade(scale(x), config.camera), y), num_parallel_calls=tf.data.AUTOTUNE
        )
    else:
        train = train.map(lambda x, y: (scale(x), y))
    train = train.batch(config.batch_size).map(
        lambda x, y: (
            tf.clip_by_value(augment(x, training=True), 0.0, 1.0),
            tf.one_hot(y, k),
            tf.gather(weights, y),
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if config.mixup > 0:
        train = train.map(lambda x, y, w: mixup(x, y, w, config.mixup), num_parallel_calls=tf.data.AUTOTUNE)
    train = train.prefetch(tf.data.AUTOTUNE)
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


def train(config: TrainConfig, dataset: Dataset | None = None) -> dict:
    """Train (or resume) the run in ``config.run_dir`` and write its report; returns report.json.

    ``dataset``: ``config.data`` as load_dataset loads it, when the caller has loaded it already (the command
    line does, before TensorFlow starts, so that bad data is refused at once)."""
    run_dir = Path(config.run_dir)  # made only once the run can start: a refused one leaves no empty folder
    keras.utils.set_random_seed(config.seed)
    if dataset is None:
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
        model = load_keras_model(checkpoint)
        log.info(
            "resuming %s after epoch %d of %d, computing in %s as it started",
            run_dir,
            done,
            config.epochs,
            model.get_layer("s1_conv1").compute_dtype,
        )
    else:
        done = 0
        (run_dir / HISTORY).unlink(missing_ok=True)
        precision = resolve_precision(config.precision)
        log.info("computing in %s (--precision %s)", precision, config.precision)
        if config.average > 0 and not config.init:
            log.warning("--average from random weights: validation and the best epoch read the averaged weights "
                        "through batch-norm statistics of weights that still move fast, so they mean little until "
                        "the run settles; it is made for fine-tuning (--init)")  # fmt: skip
        model = _initial_model(config, precision)
        model.compile(
            optimizer=_optimizer(config),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        )
    # only now: a stored config is what a rerun resumes with, so one that cannot start is not kept
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / "config.json")
    train_ds, val_ds = _datasets(dataset, config)
    history = _history(run_dir) if done else []
    progress = _Progress(config.epochs, history, run_dir / BEST_CHECKPOINT)
    if done < config.epochs:
        model.fit(
            train_ds,
            validation_data=val_ds,
            initial_epoch=done,
            shuffle=False,  # tf.data already reshuffles every epoch
            epochs=config.epochs,
            verbose=1 if sys.stdout.isatty() else 2,
            callbacks=[
                *([_AveragedWeights(resumed=done > 0)] if config.average > 0 else []),
                keras.callbacks.LearningRateScheduler(lambda epoch: learning_rate(epoch, config)),
                progress,
                keras.callbacks.CSVLogger(str(run_dir / HISTORY), append=True),
                keras.callbacks.ModelCheckpoint(str(checkpoint)),
            ],
        )
    save_float_model(model, run_dir / FLOAT_MODEL)
    return _write_report(model, dataset, config, run_dir)


def save_float_model(model: keras.Model, path: Path) -> None:
    """Save weights and graph in the plain float32 form (model.plain_copy) without the optimiser's
    state: a third of the size, and all that conversion, evaluation or a warm start needs, with
    nothing of this package needed to load it (the per-epoch checkpoint keeps the optimiser)."""
    plain_copy(model).save(path)


class _AveragedWeights(keras.callbacks.SwapEMAWeights):
    """Keras' swap of the averaged weights into the model for validation and at every epoch's end,
    so that the checkpoints (and so the best epoch and the final model) hold the average. A
    checkpoint is written in that swapped state, the training weights in the optimiser's average
    slots: a resumed run starts swapped and swaps back before its first epoch."""

    def __init__(self, resumed: bool) -> None:
        super().__init__(swap_on_epoch=True)
        self._ema_weights_in_model = resumed


class _Progress(keras.callbacks.Callback):
    """Records each epoch's wall-clock seconds in the logs (so the history CSV keeps the speed), saves
    the float model of each epoch that beats the best validation accuracy so far to ``best_path``, and
    logs one line per epoch with the best so far and when the whole run should end."""

    def __init__(self, epochs: int, history: list[dict], best_path: Path) -> None:
        super().__init__()
        self.epochs = epochs
        self.seconds = [float(r["seconds"]) for r in history if r.get("seconds")]
        self.best = best_epoch(history)
        self.best_path = best_path

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        logs["seconds"] = round(time.monotonic() - self.start, 1)
        self.seconds.append(logs["seconds"])
        accuracy = float(logs.get("val_accuracy", 0.0))
        if accuracy > self.best[0] or not self.best[1]:  # the first epoch is the best so far, even at 0
            self.best = (accuracy, epoch + 1)
            save_float_model(self.model, self.best_path)
        left = (self.epochs - epoch - 1) * float(np.mean(self.seconds[-5:]))
        end = time.strftime("%H:%M", time.localtime(time.time() + left))
        log.info(
            "epoch %d/%d: %.0f s, accuracy %.2f%%, validation %.2f%% (best %.2f%% at epoch %d); %s left, done at %s",
            epoch + 1,
            self.epochs,
            logs["seconds"],
            100 * float(logs.get("accuracy", 0.0)),
            100 * float(logs.get("val_accuracy", 0.0)),
            100 * self.best[0],
            self.best[1],
            _duration(left),
            end,
        )


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


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
    probs = predict_keras(model, dataset.val.images)
    evaluation = classification_report(dataset.val.labels, probs.argmax(axis=1))
    write_evaluation(evaluation, run_dir, "validation", f"float model on {Path(dataset.val.origin).name}")
    stages = _stages(run_dir, config)
    plot_history([stage / HISTORY for stage in stages], run_dir / "curves.png")
    stage_epochs = [len(_history(stage)) for stage in stages]
    history = _history(run_dir)
    seconds = [float(r["seconds"]) for r in history if r.get("seconds")]
    best_accuracy, best = best_epoch(history)
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
        # The best epoch is chosen on the validation split, so its figure there is optimistic: judge it
        # on another split (convert's gate uses the last epoch's model, model_float.keras).
        "best_epoch": {
            "epoch": best,
            "val_accuracy": round(best_accuracy, 4),
            "split": dataset.val.origin,
            "file": BEST_CHECKPOINT,
        },
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


def best_epoch(history: list[dict]) -> tuple[float, int]:
    """(highest validation accuracy, its epoch counted from 1) in a history; (0, 0) when empty. The
    first of equals, as the best checkpoint keeps it (it is replaced only by a better epoch)."""
    accuracies = [float(r["val_accuracy"]) for r in history]
    if not accuracies:
        return 0.0, 0
    best = max(accuracies)
    return best, accuracies.index(best) + 1


def _joined(widths: tuple[int, ...]) -> str:
    return ",".join(map(str, widths))
