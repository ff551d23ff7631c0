"""Scores what a pipeline saw on a clip against the clip's ground truth: the measure for detection and tracking.

Truth is a JSON list with one entry per frame, each a list of ``{"box": [x, y, w, h], "label": EMOTION}``
(``training/truthclips.py`` makes such clips). On every frame the reported faces are matched to the true
ones one to one, best overlap first, a pair counting when their IoU is at least ``IOU_MATCH`` (0.3: a Haar
box and a hand-drawn one frame the same face differently, and a looser match is what users mean by
"found"). Then:

- recall: true faces found / true faces;
- precision: reported faces that matched a true one / reported faces;
- label accuracy: found faces whose label is right / found faces;
- end-to-end: found and right / true faces, the one number a user sees.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.vision.detector import Box
from edge.vision.tracker import iou

IOU_MATCH = 0.3

Face = tuple[Box, str]  # a box and its label, true or reported


class TruthError(ValueError):
    """A truth file that cannot be used; the message names the file and what is wrong."""


@dataclass
class Score:
    faces: int = 0  # true faces, over all frames
    reported: int = 0
    found: int = 0  # true faces matched by a reported one
    right: int = 0  # of those, labelled right

    @property
    def recall(self) -> float:
        return self.found / self.faces if self.faces else 0.0

    @property
    def precision(self) -> float:
        return self.found / self.reported if self.reported else 0.0

    @property
    def label_accuracy(self) -> float:
        return self.right / self.found if self.found else 0.0

    @property
    def end_to_end(self) -> float:
        return self.right / self.faces if self.faces else 0.0

    def add(self, truth: Sequence[Face], reported: Sequence[Face]) -> None:
        """One frame's faces."""
        self.faces += len(truth)
        self.reported += len(reported)
        for t, r in match([box for box, _ in truth], [box for box, _ in reported]):
            self.found += 1
            self.right += truth[t][1] == reported[r][1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "faces": self.faces,
            "reported": self.reported,
            "recall": round(self.recall, 3),
            "precision": round(self.precision, 3),
            "label_accuracy": round(self.label_accuracy, 3),
            "end_to_end": round(self.end_to_end, 3),
        }


def match(truth: Sequence[Box], reported: Sequence[Box]) -> list[tuple[int, int]]:
    """Pairs (truth index, reported index), one to one, best IoU first, each at least IOU_MATCH."""
    pairs = sorted(
        ((iou(t, r), i, j) for i, t in enumerate(truth) for j, r in enumerate(reported)), key=lambda p: -p[0]
    )
    matched, used_t, used_r = [], set(), set()
    for overlap, i, j in pairs:
        if overlap >= IOU_MATCH and i not in used_t and j not in used_r:
            matched.append((i, j))
            used_t.add(i)
            used_r.add(j)
    return sorted(matched)


def score(truth: Sequence[Sequence[Face]], reported: Sequence[Sequence[Face]]) -> Score:
    """Frame by frame; both sequences must have the same length (a frame without faces is an empty list)."""
    if len(truth) != len(reported):
        raise TruthError(f"truth has {len(truth)} frames but {len(reported)} were reported")
    result = Score()
    for t, r in zip(truth, reported):
        result.add(t, r)
    return result


def load_truth(path: str | Path, labels: Sequence[str]) -> list[list[Face]]:
    """The truth file's faces per frame; TruthError naming the file and the first bad entry."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise TruthError(f"{path}: cannot read truth file ({exc.strerror})") from None
    except ValueError as exc:
        raise TruthError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, list):
        raise TruthError(f"{path}: expected a list with one entry per frame")
    frames: list[list[Face]] = []
    for n, entry in enumerate(data):
        try:
            raw = [([int(v) for v in face["box"]], str(face["label"])) for face in entry]
        except (TypeError, KeyError, ValueError):
            raise TruthError(f"{path}: frame {n}: expected a list of {{'box': [x, y, w, h], 'label': ...}}") from None
        for box, label in raw:
            if len(box) != 4 or box[2] <= 0 or box[3] <= 0:
                raise TruthError(f"{path}: frame {n}: box {box} is not [x, y, w, h] with w, h > 0")
            if label not in labels:
                raise TruthError(f"{path}: frame {n}: unknown label {label!r}; expected one of {', '.join(labels)}")
        frames.append([((box[0], box[1], box[2], box[3]), label) for box, label in raw])
    return frames


def to_text(result: dict[str, Any]) -> str:
    """One line from ``Score.as_dict()``."""
    return (
        f"truth: {result['faces']} faces, {result['reported']} reported: recall {result['recall']:.3f}  "
        f"precision {result['precision']:.3f}  labelled right {result['label_accuracy']:.3f}  "
        f"end-to-end {result['end_to_end']:.3f}\n"
    )
