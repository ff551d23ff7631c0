"""``analyze`` end to end with the shipped model on the bundled clip and the still fixtures."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from edge.tools import analyze
from edge.tools.demo import DEMO_CLIP
from edge.vision.emotions import EMOTIONS

MEDIA = Path(__file__).resolve().parent / "fixtures" / "media"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clip_jsonl(tmp_path_factory):
    """A real process, so anything a native library prints to stdout would show up in it."""
    out = tmp_path_factory.mktemp("analyze")
    code = "import sys; from edge.tools.analyze import run; sys.exit(run(sys.argv[1], annotate=sys.argv[2]))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(DEMO_CLIP), str(out / "annotated.avi")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done, out / "annotated.avi"


def test_jsonl_stdout_is_one_json_object_per_frame_and_nothing_else(clip_jsonl):
    done, _ = clip_jsonl
    lines = done.stdout.splitlines()
    records = [json.loads(line) for line in lines]  # every line parses
    assert [r["frame"] for r in records] == list(range(90))
    assert records[15]["ts"] == 1.0
    # B appears at frame 15; its track starts at its second frame (tracker.min_hits = 2), but analyze
    # reports a confirmed face from its first frame on
    assert [len(r["faces"]) for r in records][:2] == [2, 2]
    assert [len(r["faces"]) for r in records][14:17] == [2, 3, 3]
    face = records[20]["faces"][0]
    assert set(face) == {"track", "box", "emotion", "confidence", "scores"}
    assert list(face["scores"]) == list(EMOTIONS)
    assert face["confidence"] == face["scores"][face["emotion"]]
    assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"])


def test_summary_goes_to_stderr_when_no_file_is_given(clip_jsonl):
    done, _ = clip_jsonl
    assert f"{DEMO_CLIP}: 90 frames (90 with faces), 6.0 s, 4 tracks" in done.stderr
    assert (
        "\noverall: " in done.stderr
        and "\ntrack 3: 1.0-2.6 s, " in done.stderr
        and "\ntrack 4: 2.7-3.9 s, " in done.stderr
    )


def test_annotated_video_is_readable_and_complete(clip_jsonl):
    _, video = clip_jsonl
    capture = cv2.VideoCapture(str(video))
    frames = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames += 1
        assert image.shape == (480, 640, 3)
    assert frames == 90


def test_summary_file_has_predominant_emotions_and_shares(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert analyze.run(str(DEMO_CLIP), "jsonl", None, tmp_path / "summary.json", None, out=out, err=err) == 0
    assert err.getvalue() == ""
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["frames"], summary["tracks"]) == (90, 4)
    seen = [t["frames"] for t in summary["per_track"]]
    # each track is reported from its first frame; C, B and D in its place may each be missed once or twice
    assert seen[0] == 90 and 68 <= seen[1] <= 70 and 23 <= seen[2] <= 25 and 18 <= seen[3] <= 20
    frames = [json.loads(line) for line in out.getvalue().splitlines()]
    for track in summary["per_track"]:  # the summary is what the per-frame records add up to
        labels = [f["emotion"] for r in frames for f in r["faces"] if f["track"] == track["track"]]
        assert track["share"] == {e: round(labels.count(e) / len(labels), 4) for e in EMOTIONS}
        assert labels.count(track["predominant"]) == max(labels.count(e) for e in EMOTIONS)  # a tie may go either way
    assert sum(summary["overall"]["share"].values()) == pytest.approx(1.0, abs=1e-3)


def test_folder_of_stills_gives_each_image_its_own_tracks_and_annotated_copy(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    annotated = tmp_path / "annotated"
    assert analyze.run(str(MEDIA), "csv", annotated, None, None, out=out, err=err) == 0
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    # name order: no_face, one_face, three_faces; the empty image still gets its row
    assert [(r["frame"], r["track"]) for r in rows] == [("0", ""), ("1", "1"), ("2", "2"), ("2", "3"), ("2", "4")]
    assert list(rows[0]) == ["frame", "ts", "track", "x", "y", "w", "h", "emotion", "confidence", *EMOTIONS]
    assert "3 tracks" in err.getvalue() or "4 tracks" in err.getvalue()
    for path in sorted(MEDIA.glob("*.jpg")):
        image = cv2.imread(str(annotated / path.name))
        assert image is not None and image.shape == (480, 640, 3)
    drawn = cv2.imread(str(annotated / "one_face.jpg")).astype(int) - cv2.imread(str(MEDIA / "one_face.jpg"))
    assert abs(drawn).max() > 100  # a box and label were drawn


def test_one_image_can_be_annotated_to_an_image_path(tmp_path):
    target = tmp_path / "out.png"
    assert analyze.run(str(MEDIA / "three_faces.jpg"), annotate=target, out=io.StringIO(), err=io.StringIO()) == 0
    assert cv2.imread(str(target)).shape == (480, 640, 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("missing.mp4",), "analyze: missing.mp4: no such file"),
        ((str(DEMO_CLIP), "xml"), "analyze: unknown format 'xml' (use jsonl or csv)"),
        (
            (str(DEMO_CLIP), "jsonl", "/no/such/dir/out.avi"),
            "analyze: /no/such/dir/out.avi: folder /no/such/dir does not exist",
        ),
        ((str(DEMO_CLIP), "jsonl", "out.gif"), "analyze: out.gif: unknown video type"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_1(args, message):
    out, err = io.StringIO(), io.StringIO()
    assert analyze.run(*args, out=out, err=err) == 1
    assert err.getvalue().startswith(message) and err.getvalue().count("\n") == 1
    assert out.getvalue() == ""


def test_a_broken_image_in_a_folder_is_skipped_not_fatal(tmp_path):
    shutil.copy(MEDIA / "one_face.jpg", tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"broken")
    out = io.StringIO()
    assert analyze.run(str(tmp_path), out=out, err=io.StringIO()) == 0
    assert [json.loads(line)["frame"] for line in out.getvalue().splitlines()] == [0]
