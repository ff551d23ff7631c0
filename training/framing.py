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
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from edge.pipeline import crop
from edge.sources.base import Frame
from edge.vision.detector import HaarDetector, grow
from edge.vision.emotions import face_to_input, to_gray
from edge.vision.reframe import Reframer
from edge.vision.tracker import iou
from training.truthclips import background, draw_person, dressed, place, random_camera, shoot

FOUND = 0.3  # the overlap with where the face was drawn that counts a detector's box as that face


@functools.cache
def _detector() -> HaarDetector:
    return HaarDetector()  # the pipeline's default detector


def in_a_frame(
    face: np.ndarray, rng: np.random.Generator, margin: float = 0.0, reframe: bool = False
) -> np.ndarray | None:
    """``face`` (48x48 gray) drawn into a scene, found and cropped; None when the detector misses it.

    ``margin`` cuts the box wider by that share of its side on every side, as another face detector's box
    or a photo cropped by hand frames a face more loosely than Haar's; the same draw for every margin.
    ``reframe`` then gives that crop, at full size, to what ``EmotionClassifier.predict`` does to a caller's
    crop by default (``edge.vision.reframe``) before it is made model input."""
    person = dressed(rng, face, "")
    place(rng, [], person)
    canvas = background(rng)
    draw_person(canvas, person)
    gray = to_gray(shoot(canvas, random_camera(rng), rng))
    boxes = _detector().detect(Frame(gray, gray, 0, 0.0))
    found = max(boxes, key=lambda box: iou(box, person.box), default=None)
    if found is None or iou(found, person.box) < FOUND:
        return None
    cut = crop(gray, grow(found, margin, gray.shape[1], gray.shape[0]))
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


def frame_faces(faces: np.ndarray, seed: int, workers: int = 2, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Every face through :func:`in_a_frame` (face i always with the same draw, however many workers), cut
    wider by a random share up to ``margin``: the framed faces, the original where the detector missed, and
    which ones were found."""
    chunk = max(1, -(-len(faces) // (workers * 8)))
    starts = range(0, len(faces), chunk)
    # spawned, not forked: the parent may be a training process, and a fork of TensorFlow's threads can hang
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        chunks = [faces[s : s + chunk] for s in starts]
        parts = list(pool.map(_frame_range, chunks, starts, [seed] * len(starts), [margin] * len(starts)))
    framed = np.concatenate([p[0] for p in parts]) if parts else faces.copy()
    found = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, bool)
    return framed, found
