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

FER = Path(__file__).parent / "fixtures" / "fer"


def test_every_degradation_changes_the_faces_the_same_way_each_time() -> None:
    faces = load_split(FER, "test").images
    for name in robustness.DEGRADATIONS:
        once, again = robustness.degrade(faces, name), robustness.degrade(faces, name)
        np.testing.assert_array_equal(once, again)
        assert once.shape == faces.shape and once.dtype == np.uint8
        changed = np.abs(once.astype(int) - faces).mean()
        assert (changed == 0) == (name == "clean"), name


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
