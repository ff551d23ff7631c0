"""The robustness report: the shipped int8 model on the committed PublicTest fixture faces, degraded."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from edge.vision.classifier import DEFAULT_MODEL
from training import robustness
from training.__main__ import main as training_main
from training.data import load_split
from training.evaluate import evaluate
from training.framing import frame_faces

FER = Path(__file__).parent / "fixtures" / "fer"


def test_every_degradation_changes_the_faces_the_same_way_each_time() -> None:
    faces = load_split(FER, "test").images
    for name in robustness.DEGRADATIONS:
        (once, kept), (again, kept_again) = robustness.degrade(faces, name), robustness.degrade(faces, name)
        np.testing.assert_array_equal(once, again)
        np.testing.assert_array_equal(kept, kept_again)
        assert once.shape == (len(kept), *faces.shape[1:]) and once.dtype == np.uint8
        changed = np.abs(once.astype(int) - faces[kept]).mean()
        assert (changed == 0) == (name == "clean"), name
        assert len(kept) == len(faces) or name == "in a frame, found by the detector", name


def test_a_face_in_a_frame_is_found_by_the_pipelines_detector_and_cut_out_as_it_cuts() -> None:
    faces = load_split(FER, "test").images
    framed, kept = robustness.degrade(faces, "in a frame, found by the detector")
    assert len(kept) >= 0.6 * len(faces)  # a frontal cascade misses profiles and a bad camera's faces
    # each crop is its face, not a piece of the scene: through the scene's light, blur and noise, most
    # crops are still more like the photo they came from than like any other (chance: 1 in 14)
    centre = slice(8, 40)
    likeness = np.array(
        [[np.corrcoef(a[centre, centre].ravel(), b[centre, centre].ravel())[0, 1] for b in faces] for a in framed]
    )
    assert (likeness.argmax(axis=1) == kept).mean() >= 0.5


def test_report_on_fixture_matches_evaluate_when_clean_and_writes_its_files(tmp_path: Path, capsys) -> None:
    assert training_main(["robustness", str(DEFAULT_MODEL), str(FER), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "robustness.json").read_text())
    assert list(result["degradations"]) == list(robustness.DEGRADATIONS)
    assert result["faces"] == len(load_split(FER, "test"))
    clean = result["degradations"]["clean"][str(DEFAULT_MODEL)]
    assert clean["accuracy"] == evaluate(DEFAULT_MODEL, FER)["accuracy"]
    table = (tmp_path / "robustness.md").read_text()
    assert table == capsys.readouterr().out
    assert f"| clean | {100 * clean['accuracy']:.1f} % ({100 * clean['macro_recall']:.1f} %) |" in table
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 2 + len(robustness.DEGRADATIONS)
    picture = cv2.imread(str(tmp_path / "robustness.png"))
    assert picture is not None and picture.shape[0] > 300 and picture.shape[1] > 600


def test_framing_gives_each_face_the_same_draw_however_many_workers() -> None:
    faces = load_split(FER, "test").images
    one, found_one = frame_faces(faces, seed=3, workers=1)
    two, found_two = frame_faces(faces, seed=3, workers=2)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(found_one, found_two)
    framed, kept = robustness.degrade(faces, "in a frame, found by the detector", seed=3)
    np.testing.assert_array_equal(framed, one[found_one])  # the report's row is the same framing
    np.testing.assert_array_equal(kept, np.flatnonzero(found_one))
