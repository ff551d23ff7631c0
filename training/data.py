"""Load FER-2013 and look-alike datasets into memory as 48x48 uint8 faces with label indices.

Two forms are supported because users download both: Kaggle's ``fer2013.csv`` (emotion, pixels,
Usage) and the image-folder layout (``train/<class>/*.jpg``, ``test/<class>/*.jpg``). A folder of
class folders with the user's own photos (any size, colour or gray) works too; without a test
folder its validation set is a stratified slice of the training images.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.noise import stderr_to_log
from edge.sources.images import IMAGE_SUFFIXES
from edge.vision.emotions import EMOTIONS, FACE_SIZE, face_to_input
from edge.vision.reframe import default_reframer

log = logging.getLogger(__name__)

CSV_COLUMNS = ("emotion", "pixels")
# fer2013.csv's Usage values, by the split names this project uses.
CSV_USAGE = {"train": "Training", "test": "PublicTest", "private": "PrivateTest"}
TEST_FOLDER_NAMES = ("test", "val", "validation")


def keras_input(faces: np.ndarray) -> np.ndarray:
    """(N, 48, 48) uint8 faces as the Keras model takes them: (N, 48, 48, 1) float32 in [0, 1]."""
    return faces[..., None].astype(np.float32) / 255.0


class DataError(Exception):
    """Input data that cannot be used; the message names the file or folder at fault."""


@dataclass
class Split:
    """Faces (N, 48, 48) uint8 and their label indices into EMOTIONS."""

    images: np.ndarray
    labels: np.ndarray
    origin: str
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(EMOTIONS)).tolist()


@dataclass
class Dataset:
    train: Split
    val: Split


def load_dataset(path: str | Path, val_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """Training and validation faces: the data's own test split, else a stratified slice of train."""
    path = Path(path)
    if _is_csv(path):
        splits = _read_csv(path)
        train = splits.get("train")
        if train is None:
            raise DataError(f"{path}: no rows with Usage 'Training'")
        val = splits.get("test")
        return Dataset(train, val) if val is not None else _stratified(train, val_fraction, seed)
    root = _existing_folder(path)
    split_dirs = _split_folders(root)
    if split_dirs is None:
        return _stratified(_read_class_folders(root), val_fraction, seed)
    if "train" not in split_dirs:
        raise DataError(f"{root}: has a test folder but no train folder")
    train = _read_class_folders(split_dirs["train"])
    if "test" in split_dirs:
        return Dataset(train, _read_class_folders(split_dirs["test"]))
    return _stratified(train, val_fraction, seed)


def load_split(path: str | Path, split: str = "test") -> Split:
    """One split for evaluation: ``train``, ``test`` (PublicTest) or ``private`` (PrivateTest, CSV).

    A folder holding class folders directly is evaluated whole, whatever ``split`` says, so a
    held-back split can be pointed at as it is.
    """
    path = Path(path)
    if split not in CSV_USAGE:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(CSV_USAGE)}")
    if _is_csv(path):
        splits = _read_csv(path)
        if split not in splits:
            raise DataError(f"{path}: no rows with Usage {CSV_USAGE[split]!r}")
        return splits[split]
    root = _existing_folder(path)
    split_dirs = _split_folders(root)
    if split_dirs is None:
        return _read_class_folders(root)
    if split not in split_dirs:
        raise DataError(f"{root}: no {split} folder")
    return _read_class_folders(split_dirs[split])


def check_source(path: str | Path) -> None:
    """DataError naming ``path`` unless it is a .csv file or a folder: the loaders' first check, without
    reading anything, so a command can refuse a wrong path before it starts anything slow."""
    path = Path(path)
    if not _is_csv(path):
        _existing_folder(path)


def _is_csv(path: Path) -> bool:
    if path.suffix.lower() != ".csv":
        return False
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return True


def _existing_folder(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"{path}: no such folder")
    if not path.is_dir():
        raise DataError(f"{path}: not a folder or a .csv file")
    return path


def _split_folders(root: Path) -> dict[str, Path] | None:
    """Map split name to folder for a train/test layout, or None when root holds class folders."""
    found: dict[str, Path] = {}
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        name = child.name.lower()
        if name == "train":
            found["train"] = child
        elif name in TEST_FOLDER_NAMES:
            found.setdefault("test", child)
        elif name in ("private", "privatetest"):
            found["private"] = child
    return found or None


def _read_class_folders(folder: Path) -> Split:
    """Read ``folder/<class>/*``; unreadable images are skipped and listed, unknown classes are fatal."""
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not class_dirs:
        raise DataError(f"{folder}: no class folders (expected {', '.join(EMOTIONS)})")
    images: list[np.ndarray] = []
    labels: list[int] = []
    skipped: list[str] = []
    # Photos of any framing are cut to the face as EmotionClassifier.predict cuts them (edge.vision.reframe), so
    # a model trains and is scored on faces framed as the Pi's detector frames them; 48 px faces are kept whole.
    reframe = default_reframer() or (lambda face: face)
    for class_dir in class_dirs:
        name = class_dir.name.lower()
        if name not in EMOTIONS:
            raise DataError(f"{class_dir}: unknown class folder; expected one of {', '.join(EMOTIONS)}")
        label = EMOTIONS.index(name)
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with stderr_to_log(log, logging.WARNING, prefix=f"{file}: "):  # libjpeg on a truncated photo
                image = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
            if image is None or image.size == 0:
                skipped.append(str(file))
                continue
            images.append(face_to_input(reframe(_to_uint8(image))))
            labels.append(label)
    if skipped:
        log.warning("%s: skipped %d unreadable image(s), first: %s", folder, len(skipped), skipped[0])
    if not images:
        raise DataError(f"{folder}: no readable images in its class folders")
    return Split(np.stack(images), np.asarray(labels, dtype=np.int64), str(folder), skipped)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """16-bit PNG/TIFF photos scaled to 8 bits, so every source reaches the model in one range."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    low, high = float(image.min()), float(image.max())
    return np.round((image - low) * (255.0 / max(high - low, 1e-12))).astype(np.uint8)


def _read_csv(path: Path) -> dict[str, Split]:
    """Kaggle's fer2013.csv by split; rows without a Usage column all count as training."""
    pixels_per_face = FACE_SIZE * FACE_SIZE
    rows: dict[str, tuple[list[np.ndarray], list[int]]] = {}
    usage_to_split = {usage: split for split, usage in CSV_USAGE.items()}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in CSV_COLUMNS if c not in columns]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {', '.join(missing)}; expected emotion, pixels[, Usage], "
                f"found {', '.join(columns) or 'none'}"
            )
        reader.fieldnames = columns
        for line, row in enumerate(reader, start=2):
            usage = (row.get("Usage") or "Training").strip()
            split = usage_to_split.get(usage)
            if split is None:
                raise DataError(f"{path}:{line}: unknown Usage {usage!r}")
            try:
                label = int(row["emotion"])
                values = np.array(row["pixels"].split(), dtype=np.int64)
            except (ValueError, AttributeError) as exc:
                raise DataError(f"{path}:{line}: not a number in emotion or pixels ({exc})") from None
            if not 0 <= label < len(EMOTIONS):
                raise DataError(f"{path}:{line}: emotion {label} is outside 0..{len(EMOTIONS) - 1}")
            if values.size != pixels_per_face:
                raise DataError(
                    f"{path}:{line}: pixels has {values.size} values, expected {pixels_per_face} "
                    f"({FACE_SIZE}x{FACE_SIZE})"
                )
            if values.min() < 0 or values.max() > 255:
                raise DataError(f"{path}:{line}: pixel values must be 0..255")
            faces, labels = rows.setdefault(split, ([], []))
            faces.append(values.astype(np.uint8).reshape(FACE_SIZE, FACE_SIZE))
            labels.append(label)
    if not rows:
        raise DataError(f"{path}: no data rows")
    return {
        split: Split(np.stack(faces), np.asarray(labels, dtype=np.int64), f"{path} ({CSV_USAGE[split]})")
        for split, (faces, labels) in rows.items()
    }


def _stratified(split: Split, val_fraction: float, seed: int) -> Dataset:
    """Hold out the same share of every class, so rare classes appear in validation too."""
    if not 0 < val_fraction < 1:
        raise DataError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    rng = np.random.default_rng(seed)
    val_idx: list[np.ndarray] = []
    for label in np.unique(split.labels):
        idx = rng.permutation(np.flatnonzero(split.labels == label))
        take = max(1, round(len(idx) * val_fraction)) if len(idx) > 1 else 0
        val_idx.append(idx[:take])
    val_mask = np.zeros(len(split), dtype=bool)
    val_mask[np.concatenate(val_idx)] = True
    held_out = int(val_mask.sum())
    if held_out in (0, len(split)):
        # Training on no faces, or validating on none (Keras' predict fails on an empty set after a whole run).
        needed = (
            "a class with at least 2 readable faces, or a test split of its own"
            if held_out == 0
            else f"a smaller validation fraction than {val_fraction:g} (--val-fraction)"
        )
        readable = f"{len(split)} readable" + (f" ({len(split.skipped)} unreadable skipped)" if split.skipped else "")
        raise DataError(
            f"{split.origin}: too few faces to split into training and validation: of {readable}, "
            f"{len(split) - held_out} would train and {held_out} validate; needs {needed}"
        )
    origin = f"{split.origin} (stratified {val_fraction:.0%} validation, seed {seed})"
    train = Split(split.images[~val_mask], split.labels[~val_mask], origin, split.skipped)
    val = Split(split.images[val_mask], split.labels[val_mask], origin)
    return Dataset(train, val)
