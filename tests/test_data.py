"""FER-2013 loaders: both download forms, users' own photos, and bad input named in one line."""

from __future__ import annotations

import csv
import logging
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import read_image

from edge.vision.detector import HaarDetector
from edge.vision.emotions import EMOTIONS, face_to_input
from edge.vision.reframe import Reframer
from training.data import DataError, load_dataset, load_split

FER = Path(__file__).parent / "fixtures" / "fer"


def write_fer_csv(path: Path, rows: list[tuple[str, ...]], header=("emotion", "pixels", "Usage")) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def fixture_rows() -> list[tuple[str, str, str]]:
    """The committed fixture faces as fer2013.csv rows: the same pixels in the CSV form."""
    rows = []
    for split, usage in (("train", "Training"), ("test", "PublicTest")):
        for label, name in enumerate(EMOTIONS):
            for file in sorted((FER / split / name).glob("*.jpg")):
                pixels = read_image(file, cv2.IMREAD_GRAYSCALE)
                rows.append((str(label), " ".join(map(str, pixels.ravel())), usage))
    return rows


def test_image_folder_layout_loads_train_and_test():
    data = load_dataset(FER)
    assert len(data.train) == 28 and len(data.val) == 14
    assert data.train.images.shape == (28, 48, 48) and data.train.images.dtype == np.uint8
    assert data.train.class_counts() == [4] * 7
    assert data.val.class_counts() == [2] * 7


def test_csv_gives_the_same_faces_as_the_folders(tmp_path):
    csv_data = load_dataset(write_fer_csv(tmp_path / "fer2013.csv", fixture_rows()))
    folder_data = load_dataset(FER)
    for csv_split, folder_split in ((csv_data.train, folder_data.train), (csv_data.val, folder_data.val)):
        # folders are read alphabetically, CSV rows in label order: compare in label order
        by_label = np.argsort(folder_split.labels, kind="stable")
        np.testing.assert_array_equal(csv_split.labels, folder_split.labels[by_label])
        np.testing.assert_array_equal(csv_split.images, folder_split.images[by_label])


def test_csv_private_split_and_missing_split(tmp_path):
    rows = [
        (label, pixels, "PrivateTest" if usage == "PublicTest" else usage) for label, pixels, usage in fixture_rows()
    ]
    path = write_fer_csv(tmp_path / "fer2013.csv", rows)
    assert len(load_split(path, "private")) == 14
    with pytest.raises(DataError, match="no rows with Usage 'PublicTest'"):
        load_split(path, "test")


def test_csv_without_usage_gets_a_stratified_validation_split(tmp_path):
    rows = [(label, pixels) for label, pixels, _ in fixture_rows()]
    data = load_dataset(write_fer_csv(tmp_path / "mine.csv", rows, header=("emotion", "pixels")), val_fraction=0.2)
    assert len(data.train) + len(data.val) == 42
    assert all(count >= 1 for count in data.val.class_counts())


def test_own_photos_any_size_and_colour_without_test_folder(tmp_path):
    for name in EMOTIONS:
        folder = tmp_path / "photos" / name.upper()  # class folder names are case-insensitive
        folder.mkdir(parents=True)
        for i, file in enumerate(sorted((FER / "train" / name).glob("*.jpg"))):
            gray = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
            colour = cv2.resize(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), (120 + 10 * i, 150))
            cv2.imwrite(str(folder / f"me_{i}.png"), colour)
    data = load_dataset(tmp_path / "photos", val_fraction=0.25)
    assert data.train.images.shape[1:] == (48, 48)
    assert len(data.train) + len(data.val) == 28
    assert data.val.class_counts() == [1] * 7


def test_own_photos_are_cut_to_the_face_as_predict_cuts_them(tmp_path):
    """A loosely cropped photo is loaded as the face its detector box frames; a 48 px face as it is."""
    photo = read_image(Path(__file__).parent / "fixtures" / "media" / "one_face.jpg")
    loose = photo[78:374, 176:472]  # the face's detector box (218, 120, 212, 212) cut 20 % wider a side
    face = read_image(next((FER / "test" / "happy").glob("*.jpg")), cv2.IMREAD_GRAYSCALE)
    folder = tmp_path / "photos" / "happy"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "a_loose.png"), loose)
    cv2.imwrite(str(folder / "b_fer.png"), face)
    images = load_split(tmp_path / "photos").images
    expected = face_to_input(Reframer(HaarDetector())(loose))
    assert np.array_equal(images[0], expected)
    assert not np.array_equal(images[0], face_to_input(loose))
    assert np.array_equal(images[1], face)


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    shutil.copytree(FER, tmp_path / "fer")
    broken = tmp_path / "fer" / "train" / "happy" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    data = load_dataset(tmp_path / "fer")
    assert len(data.train) == 28
    assert data.train.skipped == [str(broken)]


def test_a_truncated_photo_is_kept_and_named_not_left_to_libjpeg_on_stderr(tmp_path, caplog, capfd):
    shutil.copytree(FER, tmp_path / "fer")
    cut = sorted((tmp_path / "fer" / "train" / "happy").glob("*.jpg"))[0]
    cut.write_bytes(cut.read_bytes()[:400])  # a copy cut short: its first rows decode
    with caplog.at_level(logging.WARNING, logger="training.data"):
        data = load_dataset(tmp_path / "fer")
    assert len(data.train) == 28 and data.train.skipped == []
    assert [r.getMessage() for r in caplog.records] == [f"{cut}: Premature end of JPEG file"]
    assert capfd.readouterr().err == ""


def photos(root: Path, counts: dict[str, int], broken: int = 0) -> Path:
    """``root``/<class>/ folders holding ``counts[class]`` fixture faces, the first also ``broken`` non-images."""
    for n, (name, count) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True)
        for i, file in enumerate(sorted((FER / "train" / name).glob("*.jpg"))[:count]):
            shutil.copy(file, folder / f"{i}.jpg")
        for i in range(broken if n == 0 else 0):
            (folder / f"broken{i}.png").write_bytes(b"not a png")
    return root


@pytest.mark.parametrize(
    ("counts", "broken", "val_fraction", "message"),
    [
        (
            {"happy": 1},
            1,
            0.1,
            "of 1 readable (1 unreadable skipped), 1 would train and 0 validate; "
            "needs a class with at least 2 readable faces, or a test split of its own",
        ),
        (
            {"happy": 1, "sad": 1, "fear": 1},
            0,
            0.5,
            "of 3 readable, 3 would train and 0 validate; needs a class with at least 2 readable faces",
        ),
        (
            {"happy": 2, "sad": 2},
            0,
            0.99,
            "of 4 readable, 0 would train and 4 validate; needs a smaller validation fraction than 0.99",
        ),
    ],
    ids=["one-face", "one-face-per-class", "all-held-out"],
)
def test_a_set_too_small_to_split_is_refused_with_its_counts(tmp_path, counts, broken, val_fraction, message):
    root = photos(tmp_path / "photos", counts, broken)
    with pytest.raises(DataError, match=re.escape(f"{root}: too few faces to split into training and validation: ")):
        load_dataset(root, val_fraction=val_fraction)
    with pytest.raises(DataError, match=re.escape(message)):
        load_dataset(root, val_fraction=val_fraction)


def test_the_smallest_sets_that_split_are_kept(tmp_path):
    data = load_dataset(photos(tmp_path / "two", {"happy": 2}))  # one face to train on, one to validate
    assert (len(data.train), len(data.val)) == (1, 1)
    data = load_dataset(photos(tmp_path / "mixed", {"happy": 1, "sad": 3}), val_fraction=0.5)
    assert data.train.class_counts()[EMOTIONS.index("happy")] == 1  # a lone face trains; the others split
    assert data.val.class_counts()[EMOTIONS.index("sad")] == 2


def test_a_csv_too_small_to_split_is_refused_too(tmp_path):
    path = write_fer_csv(tmp_path / "mine.csv", [fixture_rows()[0][:2]], header=("emotion", "pixels"))
    with pytest.raises(DataError, match=re.escape(f"{path} (Training): too few faces to split")):
        load_dataset(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "nowhere", "nowhere: no such folder"),
        (lambda root: (root / "train" / "joyful").mkdir(parents=True) or root, "joyful: unknown class folder"),
        (
            lambda root: write_fer_csv(root / "bad.csv", [("0", "1 2 3")], header=("label", "pixels")),
            "bad.csv: missing column(s) emotion",
        ),
        (
            lambda root: write_fer_csv(root / "short.csv", [("3", "0 " * 2300, "Training")]),
            "short.csv:2: pixels has 2300 values, expected 2304",
        ),
        (
            lambda root: write_fer_csv(root / "label.csv", [("9", "0 " * 2304, "Training")]),
            "label.csv:2: emotion 9 is outside 0..6",
        ),
    ],
    ids=["missing-folder", "unknown-class", "wrong-columns", "short-pixel-row", "bad-label"],
)
def test_bad_input_names_the_file(tmp_path, make, message):
    with pytest.raises(DataError, match=re.escape(message)):
        load_dataset(make(tmp_path))
