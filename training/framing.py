"""A face as the pipeline gets it from a camera, not as FER-2013 cropped it: drawn into a room scene as
the truth clips draw people (a head on shoulders, 50-220 px, a random camera), found there by the
detector the pipeline uses and cut out by its box as the pipeline cuts it.

The robustness report scores models on test faces treated so; ``train --framed`` shows a share of the
training faces that way. No single degradation (a small face, a shifted box, noise) stands for what a
detector's box on a drawn-in face does to it: its framing, the head's edge and the light around it.
"""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from edge.pipeline import crop
from edge.sources.base import Frame
from edge.vision.detector import HaarDetector, grow
from edge.vision.emotions import EMOTIONS, face_to_input, to_gray
from edge.vision.reframe import Reframer
from edge.vision.tracker import iou
from training.data import Split
from training.truthclips import background, draw_person, dressed, place, random_camera, shoot

T = TypeVar("T")
FOUND = 0.3  # the overlap with where the face was drawn that counts a detector's box as that face


@functools.cache
def _detector() -> HaarDetector:
    return HaarDetector()  # the pipeline's default detector


def cut_from_a_frame(face: np.ndarray, rng: np.random.Generator, margin: float = 0.0) -> np.ndarray | None:
    """``face`` (48x48 gray) drawn into a scene and found there, cut out at full size by the detector's box grown
    by ``margin`` of its side on every side; None when the detector misses it.

    A margin frames the face as another face detector's box or a photo cropped by hand frames it, more loosely
    than Haar's; the same draw for every margin."""
    person = dressed(rng, face, "")
    place(rng, [], person)
    canvas = background(rng)
    draw_person(canvas, person)
    gray = to_gray(shoot(canvas, random_camera(rng), rng))
    boxes = _detector().detect(Frame(gray, gray, 0, 0.0))
    found = max(boxes, key=lambda box: iou(box, person.box), default=None)
    if found is None or iou(found, person.box) < FOUND:
        return None
    return crop(gray, grow(found, margin, gray.shape[1], gray.shape[0]))


def in_a_frame(
    face: np.ndarray, rng: np.random.Generator, margin: float = 0.0, reframe: bool = False
) -> np.ndarray | None:
    """:func:`cut_from_a_frame` made model input (48x48); ``reframe`` first gives the full-size crop to what
    ``EmotionClassifier.predict`` does to a caller's crop by default (``edge.vision.reframe``)."""
    cut = cut_from_a_frame(face, rng, margin)
    if cut is None:
        return None
    return face_to_input(Reframer(_detector())(cut) if reframe else cut)


def _frame_range(faces: np.ndarray, start: int, seed: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    framed, found = faces.copy(), np.zeros(len(faces), bool)
    for k, face in enumerate(faces):
        # the margin from a generator of its own, so that a face's scene is the same whatever the margin
        wider = np.random.default_rng((seed, start + k, 1)).uniform(0, margin)
        out = in_a_frame(face, np.random.default_rng((seed, start + k)), wider)
        if out is not None:
            framed[k], found[k] = out, True
    return framed, found


def _photo_range(faces: np.ndarray, start: int, seed: int, margin: float) -> list[np.ndarray | None]:
    return [cut_from_a_frame(face, np.random.default_rng((seed, start + k)), margin) for k, face in enumerate(faces)]


def _in_parallel(
    work: Callable[[np.ndarray, int, int, float], T], faces: np.ndarray, seed: int, margin: float, workers: int
) -> list[T]:
    """``work(chunk, start, seed, margin)`` over chunks of ``faces`` in ``workers`` processes, in order: face i
    gets the same draw however many workers there are."""
    chunk = max(1, -(-len(faces) // (workers * 8)))
    starts = range(0, len(faces), chunk)
    # spawned, not forked: the parent may be a training process, and a fork of TensorFlow's threads can hang
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        chunks = [faces[s : s + chunk] for s in starts]
        return list(pool.map(work, chunks, starts, [seed] * len(starts), [margin] * len(starts)))


def frame_faces(faces: np.ndarray, seed: int, workers: int = 2, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Every face through :func:`in_a_frame` (face i always with the same draw, however many workers), cut
    wider by a random share up to ``margin``: the framed faces, the original where the detector missed, and
    which ones were found."""
    parts = _in_parallel(_frame_range, faces, seed, margin, workers)
    framed = np.concatenate([p[0] for p in parts]) if parts else faces.copy()
    found = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, bool)
    return framed, found


def write_photos(faces: Split, out: Path, margin: float, seed: int, workers: int = 2) -> int:
    """Each face of ``faces`` through :func:`cut_from_a_frame`, written as ``out/<class>/<index>.png`` at full size:
    a set of face photos framed ``margin`` wider than Haar frames them, in the layout users' own photos come in,
    made from faces of a split never trained on. Faces the detector misses are left out; returns how many were
    written."""
    photos = [photo for part in _in_parallel(_photo_range, faces.images, seed, margin, workers) for photo in part]
    for name in EMOTIONS:
        (out / name).mkdir(parents=True, exist_ok=True)
    written = 0
    for index, (photo, label) in enumerate(zip(photos, faces.labels)):
        if photo is not None:
            cv2.imwrite(str(out / EMOTIONS[label] / f"{index:05d}.png"), photo)
            written += 1
    return written
