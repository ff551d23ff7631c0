"""The robustness report: the shipped int8 model on the committed PublicTest fixture faces, degraded."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from helpers import read_image

from edge.vision.classifier import DEFAULT_MODEL
from edge.vision.emotions import EMOTIONS
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
        assert len(kept) == len(faces) or name.startswith("in a frame"), name


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


def test_a_wider_cut_is_the_same_box_grown_around_the_same_face() -> None:
    faces = load_split(FER, "test").images
    tight, kept = robustness.degrade(faces, "in a frame, found by the detector")
    wide, kept_wide = robustness.degrade(faces, "in a frame, cut 20% wider")
    np.testing.assert_array_equal(kept, kept_wide)  # the same scenes and detections, only the cut differs
    # the tight box is the middle 1/1.4 of the wide one (less where the frame's edge clipped the growth)
    inner = [cv2.resize(face[7:41, 7:41], (48, 48), interpolation=cv2.INTER_LINEAR) for face in wide]
    likeness = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(inner, tight)]
    assert np.median(likeness) > 0.9
    assert np.abs(wide.astype(int) - tight).mean() > 10  # and the whole crop is not the tight one


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


def test_framing_with_a_margin_cuts_the_same_found_faces_wider() -> None:
    faces = load_split(FER, "test").images
    tight, found = frame_faces(faces, seed=3, workers=1)
    wide, found_wide = frame_faces(faces, seed=3, workers=1, margin=0.3)
    np.testing.assert_array_equal(found, found_wide)  # the margin does not change a face's scene
    np.testing.assert_array_equal(wide[~found], tight[~found])  # a missed face stays as it was
    moved = np.abs(wide[found].astype(int) - tight[found]).mean(axis=(1, 2))
    assert (moved > 3).mean() >= 0.7  # most are cut visibly wider (margins are drawn from 0 to 0.3)


def test_photos_are_found_faces_cut_wider_at_full_size_in_class_folders(tmp_path: Path) -> None:
    """``python -m training photos``: a loosely cropped photo set from test faces, the same for a seed."""
    faces = load_split(FER, "test")
    assert training_main(["photos", str(FER), str(tmp_path / "a"), "--seed", "3", "--margin", "0.3"]) == 0
    written = sorted((tmp_path / "a").glob("*/*.png"))
    _, kept = robustness.degrade(faces.images, "in a frame, found by the detector", seed=3)
    assert len(written) == len(kept) > len(faces) // 2  # the faces the detector found, no others
    assert [p.parent.name for p in written] == [EMOTIONS[faces.labels[i]] for i in kept]
    assert [int(p.stem) for p in written] == list(kept)
    sides = [read_image(p, cv2.IMREAD_GRAYSCALE).shape[0] for p in written]
    assert min(sides) > 48  # a face of 50 px or more in the scene, plus 30 % on every side, not resized
    training_main(["photos", str(FER), str(tmp_path / "b"), "--seed", "3", "--margin", "0.3"])
    assert all(
        np.array_equal(read_image(p), read_image(tmp_path / "b" / p.relative_to(tmp_path / "a"))) for p in written
    )
