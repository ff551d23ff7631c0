"""The truth scorer on a hand-made case whose answers are worked out by hand, and the truth files it reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.tools.truth import TruthError, load_truth, match, score
from edge.vision.emotions import EMOTIONS

FIXTURES = Path(__file__).parent / "fixtures" / "truth"

TRUTH = [
    [((0, 0, 100, 100), "happy"), ((200, 0, 100, 100), "sad")],
    [((0, 0, 100, 100), "happy")],
    [],
    [((300, 300, 50, 50), "angry")],
]
REPORTED = [
    # both found (IoU 0.81 and 0.32), one labelled wrong
    [((10, 10, 90, 90), "happy"), ((240, 20, 100, 100), "happy")],
    # found and right, plus a false face
    [((5, 0, 100, 100), "happy"), ((400, 400, 60, 60), "neutral")],
    # a false face on an empty frame
    [((0, 0, 40, 40), "fear")],
    # the overlap is too small to count (IoU 0.09): a miss and a false face
    [((330, 330, 50, 50), "angry")],
]


def test_scores_a_hand_made_case():
    result = score(TRUTH, REPORTED)
    # 4 true faces, 6 reported; found: 3 (frame 0 twice, frame 1 once); right: 2
    assert (result.faces, result.reported, result.found, result.right) == (4, 6, 3, 2)
    assert result.recall == pytest.approx(3 / 4)
    assert result.precision == pytest.approx(3 / 6)
    assert result.label_accuracy == pytest.approx(2 / 3)
    assert result.end_to_end == pytest.approx(2 / 4)


def test_matching_is_one_to_one_best_overlap_first():
    truth = [(0, 0, 100, 100)]
    # both overlap the one true face; the closer one takes it, the other is a false face
    assert match(truth, [(30, 0, 100, 100), (5, 0, 100, 100)]) == [(0, 1)]
    assert match(truth, [(0, 0, 100, 100)] * 2) == [(0, 0)]
    # and the other way round: one reported face overlapping two true ones (heads close together) is one found
    assert match([(0, 0, 100, 100), (20, 0, 100, 100)], [(5, 0, 100, 100)]) == [(0, 0)]


def test_frame_counts_must_agree():
    with pytest.raises(TruthError, match="4 frames but 3"):
        score(TRUTH, REPORTED[:3])


def test_bad_truth_files_are_named(tmp_path):
    cases = {
        "notjson": "{",
        "notlist": '{"box": 1}',
        "nobox": '[[{"label": "happy"}]]',
        "zero": '[[{"box": [0, 0, 0, 5], "label": "happy"}]]',
        "short": '[[{"box": [0, 0, 5], "label": "happy"}]]',
        "label": '[[{"box": [0, 0, 5, 5], "label": "bored"}]]',
    }
    for name, text in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        with pytest.raises(TruthError, match=str(path)):
            load_truth(path, EMOTIONS)
    with pytest.raises(TruthError, match="cannot read"):
        load_truth(tmp_path / "missing.json", EMOTIONS)


@pytest.mark.parametrize("clip", sorted(FIXTURES.glob("*.truth.json")), ids=lambda p: p.name)
def test_committed_truth_clips_are_readable_and_sized_as_promised(clip):
    frames = load_truth(clip, EMOTIONS)
    assert len(frames) == 120
    sizes = [max(box[2:]) for faces in frames for box, _ in faces]
    assert min(sizes) >= 1 and max(sizes) <= 220
    assert max(len(faces) for faces in frames) <= 3
    assert json.loads(clip.read_text())[0][0].keys() == {"box", "label"}
