"""A tiny train -> resume -> convert -> predict round trip on the committed fixture faces."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import read_image

from convert.__main__ import main as convert_main
from convert.quantize import ConversionError, ConvertConfig, convert
from edge.vision.classifier import DEFAULT_MODEL, EmotionClassifier
from edge.vision.emotions import EMOTIONS
from training.__main__ import main as training_main

FER = Path(__file__).parent / "fixtures" / "fer"
TINY = ["--epochs", "2", "--widths", "8,16", "--dense", "16", "--batch-size", "16"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    assert training_main(["train", str(FER), "--run-dir", str(run), *TINY]) == 0
    return run


def history_rows(run: Path) -> list[dict]:
    with (run / "history.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_train_writes_a_complete_run_folder(run_dir):
    for name in (
        "config.json",
        "history.csv",
        "curves.png",
        "validation_confusion.png",
        "validation_per_class.md",
        "validation_per_class.csv",
        "report.json",
        "model_float.keras",
        "best.keras",
    ):
        assert (run_dir / name).stat().st_size > 0, name
    report = json.loads((run_dir / "report.json").read_text())
    assert report["labels"] == list(EMOTIONS)
    assert report["train"]["faces"] == 28 and report["validation"]["faces"] == 14
    assert report["epochs"] == 2 and report["seconds_per_epoch"] > 0
    assert set(report["evaluation"]["per_class"]) == set(EMOTIONS)
    assert [float(r["seconds"]) > 0 for r in history_rows(run_dir)] == [True, True]
    best = max(range(2), key=lambda i: float(history_rows(run_dir)[i]["val_accuracy"]))
    assert report["best_epoch"]["epoch"] == best + 1
    assert report["best_epoch"]["split"] == report["validation"]["origin"]
    import keras

    assert not keras.models.load_model(run_dir / "model_float.keras").compiled  # no optimiser state kept


def test_same_command_resumes_where_it_stopped(run_dir):
    before = history_rows(run_dir)
    assert training_main(["train", str(FER), "--run-dir", str(run_dir), "--epochs", "3", *TINY[2:]]) == 0
    after = history_rows(run_dir)
    assert [r["epoch"] for r in after] == ["0", "1", "2"]
    assert after[:2] == before  # finished epochs are not trained again


def test_a_changed_setting_with_an_existing_run_folder_is_refused_in_one_line(run_dir, caplog):
    stored = (run_dir / "config.json").read_text()
    history = history_rows(run_dir)
    changed = [*TINY, "--learning-rate", "0.5", "--dense", "32", "--precision", "float32"]
    assert training_main(["train", str(FER), "--run-dir", str(run_dir), *changed]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert f"{run_dir} was started with other settings" in errors[0]
    assert "--learning-rate 0.002 -> 0.5" in errors[0] and "--dense 16 -> 32" in errors[0]
    assert "--precision auto -> float32" in errors[0]
    assert (run_dir / "config.json").read_text() == stored and history_rows(run_dir) == history


def test_a_moved_data_folder_still_resumes_the_run(run_dir, tmp_path, caplog):
    """Where the data is may change (a folder moved, another disk): the run goes on from where it stopped."""
    caplog.set_level("INFO")
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    moved = tmp_path / "moved" / "fer"
    shutil.copytree(FER, moved)
    history = history_rows(run)
    epochs = str(len(history))  # all done: the resume trains nothing more, so this stays quick
    assert training_main(["train", str(moved), "--run-dir", str(run), "--epochs", epochs, *TINY[2:]]) == 0
    assert not [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert f"resuming {run} after epoch {epochs} of {epochs}" in caplog.text
    assert history_rows(run) == history
    assert json.loads((run / "config.json").read_text())["data"] == str(moved)


@pytest.mark.parametrize("shape", [(16, 6, 6, 5), (16, 5)], ids=["feature map", "head"])
def test_the_fused_batch_norm_trains_as_keras_batch_norm(shape):
    import keras

    from training.model import FusedBatchNormalization

    x = np.random.default_rng(0).normal(2.0, 3.0, shape).astype("float32")
    plain, fused = keras.layers.BatchNormalization(momentum=0.5), FusedBatchNormalization(momentum=0.5)
    for _ in range(3):  # the moving statistics move the same way, step after step
        np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), atol=1e-5)
    for a, b in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert fused.moving_variance.numpy().mean() > 7  # 9 - 8 / 2**3: it follows the batches' variance
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), atol=1e-5)


def saved_layers(path: Path) -> list[tuple[str, str]]:
    """(class, dtype policy) of each layer as a .keras file stores it, read without loading it."""
    import zipfile

    config = json.loads(zipfile.ZipFile(path).read("config.json"))["config"]
    return [(layer["class_name"], layer["config"]["dtype"]["config"]["name"]) for layer in config["layers"][1:]]


def test_averaging_from_random_weights_is_warned_about(tmp_path, caplog):
    argv = ["train", str(FER), "--run-dir", str(tmp_path / "avg"), *TINY, "--epochs", "1", "--average", "0.999"]
    assert training_main(argv) == 0
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "training.train"]
    assert warning.startswith("--average from random weights: ") and "(--init)" in warning


@pytest.mark.parametrize(
    ("flags", "hardware"),
    [
        ("fpu sse2 avx2 avx512f avx512_vnni amx_bf16 amx_int8 amx_tile", True),  # Xeon since Sapphire Rapids
        ("fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni", True),  # AMD EPYC Zen 4: 1.5 times float32's speed
        ("fpu sse2 avx2 fma bmi2", False),  # Zen 3: emulated, 14 times slower than float32
        ("fpu sse2 avx2 xavx512_bf16x", False),  # a flag is a whole word
    ],
)
def test_auto_precision_is_bfloat16_where_the_cpu_multiplies_it(flags, hardware):
    from training.train import multiplies_bfloat16

    cpuinfo = f"processor\t: 0\nmodel name\t: some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n"
    assert multiplies_bfloat16(cpuinfo) is hardware


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_a_run_computes_in_the_precision_asked_and_saves_plain_float32_models(precision, tmp_path, caplog):
    import keras

    run = tmp_path / precision
    caplog.set_level("INFO")
    argv = ["train", str(FER), "--run-dir", str(run), *TINY, "--epochs", "1", "--precision", precision]
    assert training_main(argv) == 0
    assert f"computing in {precision} (--precision {precision})" in caplog.text
    checkpoint = keras.models.load_model(run / "checkpoint.keras")
    assert checkpoint.get_layer("s1_conv1").compute_dtype == precision
    assert checkpoint.get_layer("scores").compute_dtype == "float32"
    for name in ("model_float.keras", "best.keras"):
        stored = saved_layers(run / name)
        assert ("BatchNormalization", "float32") in stored, name
        assert {policy for _, policy in stored} == {"float32"}, name
        assert not any("Fused" in kind for kind, _ in stored), name
    saved = keras.models.load_model(run / "model_float.keras")
    faces = fixture_faces()
    np.testing.assert_allclose(saved.predict(faces, verbose=0), checkpoint.predict(faces, verbose=0), atol=0.02)


def test_camera_degradation_keeps_shape_and_range_and_changes_faces():
    import tensorflow as tf

    from training.train import camera_degrade

    tf.random.set_seed(0)
    faces = np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in sorted(FER.glob("test/*/*.jpg"))[:6]])
    x = tf.constant(faces[..., None].astype("float32") / 255.0)
    untouched = [camera_degrade(x[i], 0.0).numpy() for i in range(len(faces))]
    np.testing.assert_allclose(np.stack(untouched), x.numpy(), atol=1e-6)
    degraded = np.stack([camera_degrade(x[i], 1.0).numpy() for i in range(len(faces)) for _ in range(4)])
    assert degraded.shape == (4 * len(faces), 48, 48, 1)
    assert degraded.min() >= 0.0 and degraded.max() <= 1.0
    changed = np.abs(degraded - np.repeat(x.numpy(), 4, axis=0)).mean(axis=(1, 2, 3)) > 0.01
    assert changed.mean() > 0.7  # five effects at even odds: almost every face is changed


def test_mixup_blends_each_face_its_label_and_its_weight_by_one_share(tmp_path):
    import tensorflow as tf

    from training.train import mixup

    tf.random.set_seed(0)
    k = len(EMOTIONS)
    values = np.arange(1, k + 1, dtype="float32") / 10  # face i is an even gray of value i, its class i
    images = tf.constant(np.broadcast_to(values[:, None, None, None], (k, 48, 48, 1)).copy())
    weights = np.arange(1, k + 1, dtype="float32")
    x, y, w = (t.numpy() for t in mixup(images, tf.eye(k), tf.constant(weights), alpha=0.4))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
    assert (y.max(axis=1) >= 0.5 - 1e-6).all()  # each face keeps the larger share
    assert (y.max(axis=1) < 0.99).any()  # and some were blended
    np.testing.assert_allclose(x.reshape(k, -1), np.repeat((y @ values)[:, None], 48 * 48, axis=1), atol=1e-6)
    np.testing.assert_allclose(w, y @ weights, atol=1e-5)
    run = tmp_path / "mixup"
    assert training_main(["train", str(FER), "--run-dir", str(run), *TINY, "--mixup", "0.4"]) == 0
    assert json.loads((run / "config.json").read_text())["mixup"] == 0.4
    assert len(history_rows(run)) == 2


def test_a_run_can_start_from_another_models_weights(run_dir, tmp_path):
    import keras

    stage2 = tmp_path / "stage2"
    # learning rate 0: the weights after one epoch are exactly the ones the run started from
    args = ["--optimizer", "sgd", "--erase", "0.5", "--learning-rate", "0", "--weight-decay", "0"]
    init = run_dir / "model_float.keras"
    assert training_main(["train", str(FER), "--run-dir", str(stage2), *TINY, "--init", str(init), *args]) == 0
    config = json.loads((stage2 / "config.json").read_text())
    assert (config["init"], config["optimizer"], config["erase"]) == (str(init), "sgd", 0.5)
    start = keras.models.load_model(init).get_layer("s1_conv1").get_weights()[0]
    after = keras.models.load_model(stage2 / "model_float.keras").get_layer("s1_conv1").get_weights()[0]
    np.testing.assert_array_equal(after, start)

    # the record follows the weights back: both stages in the report, the card and models/report/
    report = json.loads((stage2 / "report.json").read_text())
    earlier = len(history_rows(run_dir))
    assert report["stages"] == [{"run_dir": str(run_dir), "epochs": earlier}, {"run_dir": str(stage2), "epochs": 2}]
    assert report["total_epochs"] == earlier + 2
    out = tmp_path / "models" / "emotion_int8.tflite"
    assert convert_main([str(stage2), str(FER), "--out", str(out), "--max-drop", "100", "--calibration", "20"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["training"]["total_epochs"] == earlier + 2
    stage1 = out.parent / "report" / "stage1_history.csv"
    assert stage1.read_text() == (run_dir / "history.csv").read_text()
    assert (out.parent / "report" / "stage1_config.json").exists()


def test_a_wider_run_grows_from_a_narrower_model(run_dir, tmp_path):
    import keras

    wide = tmp_path / "wide"
    argv = ["train", str(FER), "--run-dir", str(wide), *TINY, "--widths", "12,24", "--dense", "24", "--init"]
    lr0 = ["--learning-rate", "0", "--weight-decay", "0"]  # the kernels stay as the run started
    assert training_main([*argv, str(run_dir / "model_float.keras"), *lr0]) == 0
    narrow = keras.models.load_model(run_dir / "model_float.keras").get_layer("s2_conv1").get_weights()[0]
    grown = keras.models.load_model(wide / "model_float.keras").get_layer("s2_conv1").get_weights()[0]
    assert grown.shape == (3, 3, 12, 24)
    np.testing.assert_array_equal(grown[:, :, :8, :16], narrow)  # what the narrow model learned
    assert not grown[:, :, 8:, :16].any()  # old filters do not read the new channels
    assert grown[:, :, :, 16:].std() > 0  # new filters start random, not dead


def fixture_faces() -> np.ndarray:
    import cv2

    faces = np.stack([read_image(path, cv2.IMREAD_GRAYSCALE) for path in sorted(FER.glob("*/*/*.jpg"))])
    return faces[..., None].astype("float32") / 255.0


def trained_looking(model):
    """Random batch-norm statistics, not the identity defaults, so that channels differ in strength."""
    import keras

    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2, w.shape).astype("float32") for w in layer.get_weights()])
    return model


def test_a_widened_model_computes_the_same_scores():
    import keras

    from training.model import build_model, resize

    keras.utils.set_random_seed(1)
    narrow, wide = trained_looking(build_model((8, 16), 16)), build_model((12, 24), 40)
    resize(narrow, wide)
    faces = fixture_faces()
    np.testing.assert_allclose(wide.predict(faces, verbose=0), narrow.predict(faces, verbose=0), atol=1e-5)


def test_pruning_channels_that_carry_nothing_keeps_the_scores():
    """Channels whose batch norm outputs zero are the weakest, so pruning them must not change a score:
    this holds only if every layer reading them (the next convolution, the flattened head, the logits)
    drops the same rows as the layer making them."""
    import keras

    from training.model import build_model, resize

    keras.utils.set_random_seed(2)
    wide = trained_looking(build_model((8, 16), 16))
    for layer in wide.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            dead = np.arange(1, len(gamma), 4)  # spread out, not the trailing ones a plain slice would drop
            gamma[dead], beta[dead] = 0.0, 0.0  # ReLU(0) = 0: these channels carry nothing
            layer.set_weights([gamma, beta, mean, variance])
    pruned = build_model((6, 12), 12)  # each layer loses exactly its dead channels
    resize(wide, pruned)
    faces = fixture_faces()
    np.testing.assert_allclose(pruned.predict(faces, verbose=0), wide.predict(faces, verbose=0), atol=1e-5)


def test_a_narrower_run_starts_from_the_strongest_channels(run_dir, tmp_path):
    import keras

    narrow = tmp_path / "narrow"
    init = run_dir / "model_float.keras"
    argv = ["train", str(FER), "--run-dir", str(narrow), *TINY, "--widths", "4,16", "--dense", "16", "--init"]
    assert training_main([*argv, str(init), "--learning-rate", "0", "--weight-decay", "0"]) == 0
    source = keras.models.load_model(init)
    gamma, _, _, variance = source.get_layer("s1_bn1").get_weights()
    strongest = np.argsort(-np.abs(gamma) / np.sqrt(variance + 1e-3))[:4]
    kept = keras.models.load_model(narrow / "model_float.keras").get_layer("s1_conv1").get_weights()[0]
    np.testing.assert_array_equal(kept, source.get_layer("s1_conv1").get_weights()[0][..., strongest])


def test_an_init_model_that_does_not_fit_is_one_line_and_non_zero(run_dir, tmp_path, caplog):
    init = str(run_dir / "model_float.keras")
    argv = ["train", str(FER), "--run-dir", str(tmp_path / "r"), "--widths", "8,16,32", "--init", init]
    assert training_main(argv) == 1
    assert f"init model {init} does not fit --widths 8,16,32" in caplog.text
    assert not (tmp_path / "r" / "config.json").exists()  # else the same command would resume with the bad flags


@pytest.mark.filterwarnings("error:Statistics for quantized inputs")  # the converter's, not the user's, concern
def test_convert_writes_a_verified_int8_model_and_card(run_dir, tmp_path):
    out = tmp_path / "models" / "emotion_int8.tflite"
    # the 3-epoch toy model is near chance, so int8 may differ from float by more than the real gate
    assert convert_main([str(run_dir), str(FER), "--out", str(out), "--max-drop", "100", "--calibration", "20"]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["labels"] == list(EMOTIONS)
    assert card["input"]["dtype"] == "int8" and card["output"]["dtype"] == "int8"
    assert card["input"]["shape"] == [1, 48, 48, 1]
    assert card["accuracy"]["faces"] == 14 and 0 <= card["accuracy"]["int8"] <= 1
    assert card["training"]["epochs"] == 3 and card["calibration"]["faces"] == 21
    for name in ("int8_confusion.png", "float_per_class.md", "curves.png", "history.csv", "training_report.json"):
        assert (out.parent / "report" / name).stat().st_size > 0, name

    classifier = EmotionClassifier.load(out)
    probs = classifier.predict(np.full((3, 64, 64), 128, np.uint8))
    assert probs.shape == (3, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    assert training_main(["evaluate", str(out), str(FER), "--out", str(tmp_path / "eval")]) == 0
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert evaluation["samples"] == 14
    assert evaluation["accuracy"] == card["accuracy"]["int8"]  # the runtime path is what was measured


def test_convert_refuses_to_write_when_int8_loses_too_much(run_dir, tmp_path):
    out = tmp_path / "emotion_int8.tflite"
    with pytest.raises(ConversionError, match="nothing written"):
        # a negative allowance cannot be met: the gate must stop the write
        convert(ConvertConfig(model=str(run_dir), data=str(FER), out=str(out), calibration=20, max_drop=-100))
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_cli_errors_are_one_line_and_non_zero(tmp_path, capsys):
    assert training_main(["train", str(tmp_path / "missing"), "--run-dir", str(tmp_path / "r")]) == 1
    assert convert_main([str(tmp_path / "norun"), str(FER)]) == 1
    assert training_main(["evaluate", str(tmp_path / "none.tflite"), str(FER)]) == 1
    assert training_main(["soup", str(tmp_path / "a.keras"), str(tmp_path / "b.keras"), "--run-dir", "s"]) == 1


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--epochs", "0", "expected a whole number of at least 1, got '0'"),
        ("--learning-rate", "-1", "expected a number of at least 0, got '-1'"),
        ("--erase", "5", "expected a number 0..1, got '5'"),
        ("--batch-size", "x", "expected a whole number of at least 1, got 'x'"),
        ("--val-fraction", "1", "expected a number 0.01..0.99, got '1'"),  # all validation, nothing to train on
    ],
)
def test_a_number_out_of_range_is_a_usage_line_before_a_run_folder_is_made(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as stop:
        training_main(["train", str(FER), "--run-dir", str(tmp_path / "r"), flag, value])
    assert stop.value.code == 2 and f"argument {flag}: {message}" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def zip_of(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


def random_bytes(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return path


def shipped_config() -> str:
    return zipfile.ZipFile(DEFAULT_MODEL.with_name("emotion_float.keras")).read("config.json").decode()


def face_folder(root: Path, good: int, broken: int = 0, name: str = "happy") -> Path:
    """``root``/``name``/ with ``good`` fixture faces and ``broken`` files that are no image."""
    folder = root / name
    folder.mkdir(parents=True)
    for i, face in enumerate(sorted((FER / "train" / name).glob("*.jpg"))[:good]):
        (folder / f"{i}.jpg").write_bytes(face.read_bytes())
    for i in range(broken):
        (folder / f"broken{i}.png").write_bytes(b"not a png")
    return root


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda tmp: random_bytes(tmp / "bad.keras"), "not a zip archive, as .keras files are"),
        (lambda tmp: random_bytes(tmp / "run" / "model_float.keras").parent, "not a zip archive, as .keras files are"),
        (
            lambda tmp: zip_of(tmp / "notes.keras", {"notes.txt": "hello"}),
            "a zip archive without config.json and model.weights.h5",
        ),
        (
            lambda tmp: zip_of(tmp / "odd.keras", {"config.json": '{"a": 1}', "model.weights.h5": ""}),
            "its config.json describes no model",
        ),
        (  # the shipped model's graph with its weights file cut to nothing: only Keras can tell
            lambda tmp: zip_of(tmp / "cut.keras", {"config.json": shipped_config(), "model.weights.h5": ""}),
            "OSError",
        ),
    ],
    ids=["random-bytes", "run-folder-corrupt", "zip-not-model", "config-not-model", "weights-corrupt"],
)
def test_a_corrupt_model_is_named_in_one_line_and_nothing_is_written(tmp_path, caplog, make, reason):
    model = make(tmp_path)
    named = model / "model_float.keras" if model.is_dir() else model
    out = tmp_path / "models" / "emotion_int8.tflite"
    assert convert_main([str(model), str(FER), "--out", str(out)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert errors[0].startswith(f"{named}: not a Keras model (") and reason in errors[0]
    assert not out.parent.exists()  # no folder made for a model that was never written


def test_a_keras_model_of_another_shape_is_not_converted(tmp_path, caplog):
    import keras

    other = tmp_path / "other.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).save(other)
    assert convert_main([str(other), str(FER), "--out", str(tmp_path / "o.tflite")]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        f"{other}: not an emotion model: it takes (None, 4) and gives (None, 3), "
        "expected (None, 48, 48, 1) faces and 7 scores"
    ]
    caplog.clear()  # one that takes faces but scores three classes is no emotion model either
    keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]).save(other)
    assert convert_main([str(other), str(FER), "--out", str(tmp_path / "o.tflite")]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        f"{other}: not an emotion model: it takes (None, 48, 48, 1) and gives (None, 3), "
        "expected (None, 48, 48, 1) faces and 7 scores"
    ]
    assert not (tmp_path / "o.tflite").exists()


@pytest.mark.parametrize(
    ("make", "argv", "message"),
    [
        (
            lambda tmp: face_folder(tmp / "data", good=1, broken=1),
            [],
            "{data}: too few faces to split into training and validation: of 1 readable (1 unreadable skipped), "
            "1 would train and 0 validate; needs a class with at least 2 readable faces, or a test split of its own",
        ),
        (
            lambda tmp: face_folder(tmp / "data", good=2),
            ["--val-fraction", "0.99"],
            "{data}: too few faces to split into training and validation: of 2 readable, 0 would train and 2 "
            "validate; needs a smaller validation fraction than 0.99 (--val-fraction)",
        ),
    ],
    ids=["no-validation-faces", "no-training-faces"],
)
def test_data_too_small_to_split_is_refused_before_a_run_folder_is_made(tmp_path, caplog, make, argv, message):
    data, run = make(tmp_path), tmp_path / "runs" / "run"
    assert training_main(["train", str(data), "--run-dir", str(run), *TINY, *argv]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [message.format(data=data)]
    assert not (tmp_path / "runs").exists()


def test_a_small_set_that_splits_still_trains_and_converts(tmp_path):
    data, run = face_folder(tmp_path / "data", good=2), tmp_path / "run"
    assert training_main(["train", str(data), "--run-dir", str(run), *TINY, "--epochs", "1"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert (report["train"]["faces"], report["validation"]["faces"]) == (1, 1)
    out = tmp_path / "models" / "emotion_int8.tflite"
    assert convert_main([str(run), str(data), "--out", str(out), "--max-drop", "100"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["accuracy"]["faces"] == 1
    assert training_main(["evaluate", str(run / "model_float.keras"), str(data)]) == 0


def test_convert_prints_its_own_progress_and_none_of_tensorflows(tmp_path):
    """A real process: the converter printed a `Captures:` line per variable to stdout, `fully_quantize` from
    C++ and a UserWarning to stderr, some fifty lines around convert's three."""
    from training.model import build_model

    model = tmp_path / "untrained.keras"
    build_model((8, 16), 16).save(model)  # converts as a trained one does, without a training run
    out = tmp_path / "models" / "m.tflite"
    argv = [str(model), str(FER), "--out", str(out), "--max-drop", "100", "--calibration", "20"]
    done = subprocess.run([sys.executable, "-m", "convert", *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert [line.split(" ")[:2] for line in lines] == [["INFO", "convert.quantize:"]] * 3, done.stderr
    assert lines[0].endswith("with 21 calibration faces") and lines[2].startswith(f"INFO convert.quantize: wrote {out}")


def test_what_tensorflow_said_is_shown_when_the_block_fails():
    """Held, not thrown away: a conversion that fails still shows its stdout and C++ stderr, after the fact."""
    code = (
        "import os, sys\n"
        "from training.quiet import held_output\n"
        "with held_output():\n"
        "    print('Captures:')\n"
        "    os.write(2, b'fully_quantize: 0\\n')\n"
        "print('after a success: nothing held is shown')\n"
        "try:\n"
        "    with held_output():\n"
        "        print('Saved artifact')\n"
        "        os.write(2, b'converter: the reason\\n')\n"
        "        raise RuntimeError('conversion failed')\n"
        "except RuntimeError:\n"
        "    print('raised')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout == "after a success: nothing held is shown\nraised\n"
    assert done.stderr == "Saved artifact\nconverter: the reason\n"


def test_bad_paths_are_refused_before_tensorflow_loads(tmp_path):
    """Each wrong path is one ERROR line at once: TensorFlow (seconds to import) is never loaded for them."""
    bad, tiny = random_bytes(tmp_path / "bad.keras"), face_folder(tmp_path / "tiny", good=1)
    shipped = DEFAULT_MODEL.with_name("emotion_float.keras")
    (tmp_path / "file").write_text("")
    convert_cases = [
        [str(tmp_path / "missing.keras"), str(FER)],
        [str(bad), str(FER)],
        [str(shipped), str(tmp_path / "nodata")],
        [str(shipped), str(FER), "--out", str(tmp_path / "file" / "models" / "emotion_int8.tflite")],
        [str(shipped), str(FER), "--out", str(tmp_path)],
        [str(shipped), str(FER), "--out", str(tmp_path / "model.onnx")],
    ]
    training_cases = [
        ["train", str(tmp_path / "nodata"), "--run-dir", str(tmp_path / "r1")],
        ["train", str(tiny), "--run-dir", str(tmp_path / "r2")],
        ["train", str(FER), "--run-dir", str(tmp_path / "r3"), "--init", str(bad)],
        ["train", str(FER), "--run-dir", str(tmp_path / "file")],
        ["evaluate", str(bad), str(FER)],
        ["soup", str(shipped), "--run-dir", str(tmp_path / "s1")],
        ["soup", str(shipped), str(tmp_path / "missing.keras"), "--run-dir", str(tmp_path / "s2")],
    ]
    code = (
        "import sys\n"
        "from convert.__main__ import main as convert\n"
        "from training.__main__ import main as training\n"
        f"codes = [convert([*argv, '--out', {str(tmp_path / 'o.tflite')!r}]) for argv in {convert_cases[:3]!r}]\n"
        f"codes += [convert(argv) for argv in {convert_cases[3:]!r}]\n"
        f"codes += [training(argv) for argv in {training_cases!r}]\n"
        "print(codes, 'tensorflow' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.split("] ")[1].strip() == "False"
    assert done.stdout.startswith(str([1] * (len(convert_cases) + len(training_cases))))
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    assert [line.split(":")[0] for line in errors] == ["ERROR convert"] * 6 + ["ERROR training"] * 7
    assert errors == [
        f"ERROR convert: {tmp_path / 'missing.keras'}: float model not found (train first, or name a .keras file)",
        f"ERROR convert: {bad}: not a Keras model (not a zip archive, as .keras files are)",
        f"ERROR convert: {tmp_path / 'nodata'}: no such folder",
        f"ERROR convert: --out {tmp_path / 'file' / 'models' / 'emotion_int8.tflite'}: {tmp_path / 'file'} is not a "
        "folder",
        f"ERROR convert: --out {tmp_path}: is a folder, not a file",
        f"ERROR convert: --out {tmp_path / 'model.onnx'}: the name must end in .tflite",
        f"ERROR training: {tmp_path / 'nodata'}: no such folder",
        f"ERROR training: {tiny}: too few faces to split into training and validation: of 1 readable, 1 would train "
        "and 0 validate; needs a class with at least 2 readable faces, or a test split of its own",
        f"ERROR training: {bad}: not a Keras model (not a zip archive, as .keras files are)",
        f"ERROR training: {tmp_path / 'file'}: --run-dir is not a folder",
        f"ERROR training: {bad}: not a Keras model (not a zip archive, as .keras files are)",
        "ERROR training: a soup needs at least two models",
        f"ERROR training: {tmp_path / 'missing.keras'}: model file not found",
    ]
    assert "Traceback" not in done.stderr
    assert not any((tmp_path / name).exists() for name in ("o.tflite", "r1", "r2", "r3", "s1", "s2"))


def test_the_shipped_int8_model_scores_the_mean_of_a_face_and_its_mirror():
    """The mirror pass lives inside the int8 graph: one invoke gives what averaging the float model's
    scores on the face and on its mirror image gives, within the error of int8 arithmetic."""
    import keras

    faces = np.stack([read_image(f, cv2.IMREAD_GRAYSCALE) for f in sorted(FER.glob("test/*/*.jpg"))])
    shipped = EmotionClassifier.load()
    card = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert card["preprocessing"]["flip_average"] is True
    float_model = keras.models.load_model(DEFAULT_MODEL.with_name("emotion_float.keras"))
    x = faces[..., None].astype(np.float32) / 255.0
    face, mirror = float_model.predict(x, verbose=0), float_model.predict(x[:, :, ::-1], verbose=0)
    int8 = shipped.predict(faces)
    quantum = 1 / 256  # the int8 output's step
    assert np.abs(int8 - (face + mirror) / 2).max() < 12 * quantum
    # and it is the two views' mean, not either view alone: on these faces they differ by more
    assert np.abs(int8 - face).max() > 24 * quantum and np.abs(int8 - mirror).max() > 24 * quantum


def test_an_averaged_run_keeps_the_average_and_resumes_from_its_training_weights(tmp_path):
    import keras

    from training.train import _AveragedWeights

    run = tmp_path / "averaged"
    averaged = ["--optimizer", "sgd", "--average", "0.9"]
    assert training_main(["train", str(FER), "--run-dir", str(run), *TINY, *averaged]) == 0
    checkpoint = keras.models.load_model(run / "checkpoint.keras")
    optimizer = checkpoint.optimizer
    assert optimizer.use_ema and optimizer.ema_momentum == pytest.approx(0.9)
    weights, averages = optimizer._trainable_variables, optimizer._model_variables_moving_average
    final = {w.path: w.numpy() for w in keras.models.load_model(run / "model_float.keras").trainable_weights}
    for average in zip(weights, averages):
        np.testing.assert_array_equal(final[average[0].path], average[1].numpy())  # the run ends on the average

    # Mid-run, a checkpoint holds the average in the model and the training weights in the optimiser's
    # slots; a resumed run must swap them back before it trains on, or it would train the average.
    stopped_average = [w.numpy() for w in weights]
    for slot, weight in zip(averages, weights):
        slot.assign(weight.numpy() + 1.0)  # stand-ins for the training weights
    swap = _AveragedWeights(resumed=True)
    swap.set_model(checkpoint)
    swap.on_epoch_begin(len(history_rows(run)))
    for weight, slot, average in zip(weights, averages, stopped_average):
        np.testing.assert_allclose(weight.numpy(), average + 1.0, atol=1e-6)
        np.testing.assert_allclose(slot.numpy(), average, atol=1e-6)


def test_a_framed_run_draws_its_faces_into_scenes_once(tmp_path):
    from training.data import load_dataset

    run = tmp_path / "framed"
    framed_run = ["train", str(FER), "--run-dir", str(run), *TINY[2:], "--framed", "0.5"]
    assert training_main([*framed_run, "--epochs", "1"]) == 0
    stored = np.load(run / "framed.npz")
    faces, framed, found = load_dataset(FER).train.images, stored["framed"], stored["found"]
    assert framed.shape == faces.shape and found.mean() > 0.5
    np.testing.assert_array_equal(framed[~found], faces[~found])  # a face the detector missed stays as it was
    assert (framed[found] != faces[found]).any(axis=(1, 2)).all()
    made = (run / "framed.npz").stat().st_mtime_ns
    assert training_main([*framed_run, "--epochs", "2"]) == 0  # resumed: the same faces, not drawn again
    assert (run / "framed.npz").stat().st_mtime_ns == made and len(history_rows(run)) == 2


def test_a_soup_holds_the_mean_of_its_models_weights_and_ships_with_its_record(run_dir, tmp_path):
    import keras

    first = keras.models.load_model(run_dir / "model_float.keras")
    other = keras.models.clone_model(first)  # same architecture, other (random) weights
    other_path = tmp_path / "other.keras"
    other.save(other_path)
    soup_dir = tmp_path / "soup"
    assert training_main(["soup", str(run_dir), str(other_path), "--run-dir", str(soup_dir)]) == 0

    souped = keras.models.load_model(soup_dir / "model_float.keras")
    for name in ("s1_conv1", "s2_conv1"):
        expected = (first.get_layer(name).get_weights()[0] + other.get_layer(name).get_weights()[0]) / 2
        np.testing.assert_allclose(souped.get_layer(name).get_weights()[0], expected, atol=1e-6)
    report = json.loads((soup_dir / "report.json").read_text())
    assert [entry["model"] for entry in report["soup"]] == [str(run_dir / "model_float.keras"), str(other_path)]
    assert all(len(entry["sha256"]) == 64 for entry in report["soup"])

    out = tmp_path / "models" / "emotion_int8.tflite"
    assert convert_main([str(soup_dir), str(FER), "--out", str(out), "--max-drop", "100", "--calibration", "20"]) == 0
    shipped_record = json.loads((out.parent / "report" / "training_report.json").read_text())
    assert shipped_record["soup"] == report["soup"]
    assert json.loads(out.with_suffix(".json").read_text())["training"]["soup"] == report["soup"]


def test_a_soup_of_models_of_other_shapes_is_refused_in_one_line(run_dir, tmp_path, caplog):
    from training.model import build_model

    wider = tmp_path / "wider.keras"
    build_model((12, 24), 24).save(wider)
    argv = ["soup", str(run_dir), str(wider), "--run-dir", str(tmp_path / "soup")]
    assert training_main(argv) == 1
    assert f"{wider}: its layers differ from {run_dir / 'model_float.keras'}'s" in caplog.text
    assert not (tmp_path / "soup").exists()
