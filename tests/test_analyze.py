"""``analyze`` end to end with the shipped model on the bundled clip and the still fixtures."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from helpers import edge_command

from edge import report as reports
from edge.sources import VideoFileSource
from edge.tools import analyze
from edge.tools.demo import DEMO_CLIP
from edge.vision.emotions import EMOTIONS

MEDIA = Path(__file__).resolve().parent / "fixtures" / "media"
REPO = Path(__file__).resolve().parent.parent


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The error lines logged: what the command shows as `ERROR message`."""
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


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
    said = [line for line in err.getvalue().splitlines() if not line.startswith("analyze: frame ")]
    assert said == [], "the summary goes to the file; a slow machine's progress lines are all stderr has"
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


def test_the_same_photo_twice_is_two_faces_not_one_followed_from_photo_to_photo(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(MEDIA / "one_face.jpg", tmp_path / name)
    out = io.StringIO()
    assert analyze.run(str(tmp_path), out=out, err=io.StringIO()) == 0
    first, second = [json.loads(line)["faces"] for line in out.getvalue().splitlines()]
    assert [f["track"] for f in first + second] == [1, 2]
    assert first[0]["scores"] == second[0]["scores"], "nothing carries over from one photo to the next"


def test_an_output_suffix_may_be_in_capitals(tmp_path):
    report = tmp_path / "RUN.HTML"
    assert analyze.run(str(MEDIA / "one_face.jpg"), report=report, out=io.StringIO(), err=io.StringIO()) == 0
    assert report.read_text().startswith("<!doctype html>")


@pytest.mark.parametrize("option", ["annotate", "summary"])
def test_the_input_video_by_another_name_is_not_written_over_either(tmp_path, option):
    video = tmp_path / "party.mp4"
    shutil.copy(DEMO_CLIP, video)
    original = video.read_bytes()
    (tmp_path / "sub").mkdir()
    spelt = tmp_path / "sub" / ".." / "party.mp4"  # the same file, named as a shell or a script may name it
    assert analyze.run(str(video), **{option: spelt}, out=io.StringIO(), err=io.StringIO()) == 1
    assert video.read_bytes() == original


def test_one_image_can_be_annotated_to_an_image_path(tmp_path):
    target = tmp_path / "out.png"
    assert analyze.run(str(MEDIA / "three_faces.jpg"), annotate=target, out=io.StringIO(), err=io.StringIO()) == 0
    assert cv2.imread(str(target)).shape == (480, 640, 3)


def test_a_photo_under_a_video_name_is_annotated_as_a_photo_and_never_to_a_video_name(tmp_path, caplog):
    photo = tmp_path / "holiday.mp4"
    shutil.copy(MEDIA / "three_faces.jpg", photo)
    folder = tmp_path / "annotated"
    assert analyze.run(str(photo), annotate=folder, out=io.StringIO(), err=io.StringIO()) == 0
    assert [p.name for p in folder.iterdir()] == ["holiday.jpg"]
    assert cv2.imread(str(folder / "holiday.jpg")).shape == (480, 640, 3)
    video = tmp_path / "ann.mp4"
    assert analyze.run(str(photo), annotate=video, out=io.StringIO(), err=io.StringIO()) == 1
    assert errors(caplog) == [
        f"analyze: --annotate {video}: a video's name, for stills: name an image file or a folder"
    ]
    assert not video.exists(), "no folder by a video's name"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("missing.mp4",), "analyze: missing.mp4: no such file"),
        ((str(DEMO_CLIP), "xml"), "analyze: unknown format 'xml' (use jsonl or csv)"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_1(args, message, caplog):
    out, err = io.StringIO(), io.StringIO()
    assert analyze.run(*args, out=out, err=err) == 1
    [line] = errors(caplog)
    assert line.startswith(message) and "\n" not in line
    assert out.getvalue() == err.getvalue() == ""


def test_a_broken_image_in_a_folder_is_skipped_not_fatal(tmp_path):
    shutil.copy(MEDIA / "one_face.jpg", tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"broken")
    out = io.StringIO()
    assert analyze.run(str(tmp_path), out=out, err=io.StringIO()) == 0
    assert [json.loads(line)["frame"] for line in out.getvalue().splitlines()] == [0]


ONE_FACE = MEDIA / "one_face.jpg"


@pytest.fixture
def outputs(tmp_path):
    """A folder holding a file and two folders, for output paths that name or sit under the wrong kind."""
    (tmp_path / "afile").write_text("")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir.avi").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    ("src", "option", "name", "reason"),
    [
        (ONE_FACE, "summary", "missing/s.json", "folder {dir}/missing does not exist"),
        (ONE_FACE, "summary", "adir", "is a folder, not a file"),
        (ONE_FACE, "summary", "afile/s.json", "{dir}/afile is not a folder"),
        (ONE_FACE, "report", "missing/out.html", "folder {dir}/missing does not exist"),
        (ONE_FACE, "report", "out.txt", "the name must end in .html, .htm or .png"),
        (ONE_FACE, "report", "adir", "is a folder, not a file"),
        (DEMO_CLIP, "annotate", "missing/out.avi", "folder {dir}/missing does not exist"),
        (DEMO_CLIP, "annotate", "out.gif", "the name must end in .avi, .mp4, .m4v, .mov or .mkv"),
        (DEMO_CLIP, "annotate", "adir.avi", "is a folder, not a file"),
        (ONE_FACE, "annotate", "afile/out", "cannot create folder (Not a directory)"),
    ],
)
def test_a_bad_output_path_fails_before_the_analysis_in_one_line(outputs, src, option, name, reason, caplog):
    out = io.StringIO()
    path = outputs / name
    assert analyze.run(str(src), **{option: path}, out=out, err=io.StringIO()) == 1
    assert errors(caplog) == [f"analyze: --{option} {path}: {reason.format(dir=outputs)}"]
    assert out.getvalue() == ""  # not one frame was analysed
    assert not (outputs / "missing").exists()


def test_a_bad_output_path_is_one_line_from_the_command_too(edge_env, tmp_path):
    """The `LEVEL message` line every command's fatal error is (docs/commands.md), here as under systemd."""
    summary = tmp_path / "missing" / "s.json"
    done = subprocess.run(
        edge_command("analyze", str(ONE_FACE), "--summary", str(summary)),
        env={**edge_env, "JOURNAL_STREAM": "8:1234"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"ERROR analyze: --summary {summary}: folder {tmp_path / 'missing'} does not exist\n"


@pytest.mark.parametrize("files", [True, False])
def test_a_reader_that_stops_early_costs_no_file_and_no_error(edge_env, tmp_path, files):
    """`analyze clip.mp4 --annotate out.avi | head -1`: the video and summary still come out whole."""
    video, summary = tmp_path / "out.avi", tmp_path / "s.json"
    outputs = ["--annotate", str(video), "--summary", str(summary)] if files else []
    process = subprocess.Popen(
        edge_command("analyze", str(DEMO_CLIP), *outputs),
        env=edge_env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and json.loads(process.stdout.readline())["frame"] == 0
    process.stdout.close()  # as head does once it has its line
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0 and "Traceback" not in err and "ERROR" not in err, err
    assert not re.search(r"\d+ frames? \(", err), (
        "no summary of a part of the clip that would pass for all of it (or: in its file)"
    )
    if files:
        assert json.loads(summary.read_text())["frames"] == 90
        source = VideoFileSource(video)
        frames = 0
        while source.read() is not None:
            frames += 1
        source.close()
        assert frames == 90


@pytest.mark.parametrize("suffix", reports.SUFFIXES)
def test_every_report_suffix_the_check_allows_is_written(tmp_path, suffix):
    report, summary = tmp_path / f"run{suffix}", tmp_path / "summary.json"
    out, err = io.StringIO(), io.StringIO()
    assert analyze.run(str(ONE_FACE), summary=summary, report=report, out=out, err=err) == 0, err.getvalue()
    assert err.getvalue() == ""
    assert json.loads(summary.read_text())["frames"] == 1
    assert report.stat().st_size > 0
    assert [json.loads(line)["frame"] for line in out.getvalue().splitlines()] == [0]


@pytest.mark.parametrize(("failing", "kept"), [("summary", "report"), ("report", "summary")])
def test_an_output_that_fails_at_the_end_costs_only_itself(tmp_path, failing, kept, caplog):
    """/dev/full behind a name the checks accept: a disk that fills up during the run."""
    paths = {"summary": tmp_path / "s.json", "report": tmp_path / "r.html"}
    paths[failing].symlink_to("/dev/full")
    out, err = io.StringIO(), io.StringIO()
    assert analyze.run(str(ONE_FACE), **paths, out=out, err=err) == 1
    assert errors(caplog) == [f"analyze: --{failing} {paths[failing]}: cannot write (No space left on device)"]
    assert [json.loads(line)["frame"] for line in out.getvalue().splitlines()] == [0]
    assert paths[kept].stat().st_size > 0


@pytest.mark.parametrize("target", ["the folder", "the image", "a hard link to the image"])
def test_annotating_over_the_input_images_is_refused_and_they_stay_as_they_were(tmp_path, target, caplog):
    image = tmp_path / "one_face.jpg"
    shutil.copy(ONE_FACE, image)
    original = image.read_bytes()
    src, out = (tmp_path, tmp_path) if target == "the folder" else (image, image)
    if target == "a hard link to the image":
        out = tmp_path / "linked.jpg"
        out.hardlink_to(image)  # another name of the same file: writing it writes the photo
    assert analyze.run(str(src), annotate=out, out=io.StringIO(), err=io.StringIO()) == 1
    named = image if target == "the folder" else out
    assert errors(caplog) == [
        f"analyze: --annotate {named}: is one of the inputs; writing it would replace the original"
    ]
    assert image.read_bytes() == original


@pytest.mark.parametrize("option", ["annotate", "summary"])
def test_writing_over_the_input_video_is_refused_before_it_is_read(tmp_path, option, caplog):
    video = tmp_path / "party.mp4"
    shutil.copy(DEMO_CLIP, video)
    original = video.read_bytes()
    assert analyze.run(str(video), **{option: video}, out=io.StringIO(), err=io.StringIO()) == 1
    assert errors(caplog) == [
        f"analyze: --{option} {video}: is one of the inputs; writing it would replace the original"
    ]
    assert video.read_bytes() == original


def test_an_annotated_photo_into_a_missing_folder_is_refused_as_the_summary_is(tmp_path, caplog):
    missing = tmp_path / "missing" / "annotated.jpg"
    assert analyze.run(str(ONE_FACE), annotate=missing, out=io.StringIO(), err=io.StringIO()) == 1
    assert errors(caplog) == [f"analyze: --annotate {missing}: folder {missing.parent} does not exist"]
    assert not missing.parent.exists()


def test_a_video_that_fails_halfway_leaves_the_annotated_file_it_would_replace_as_it_was(tmp_path, caplog):
    """The annotated video is written beside its name and moved there only when the run completes."""
    full = tmp_path / "full.avi"  # MJPG frames: cut in the middle, the frame count still says 90
    source = VideoFileSource(DEMO_CLIP)
    writer = cv2.VideoWriter(str(full), cv2.VideoWriter.fourcc(*"MJPG"), source.fps, (640, 480))
    while (frame := source.read()) is not None:
        writer.write(frame.image)
    writer.release()
    source.close()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    keep = tmp_path / "keep.avi"
    keep.write_bytes(b"last week's annotated video")
    assert analyze.run(str(cut), annotate=keep, out=io.StringIO(), err=io.StringIO()) == 1
    assert errors(caplog) and "unreadable from frame" in errors(caplog)[0], errors(caplog)
    assert keep.read_bytes() == b"last week's annotated video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.avi", "full.avi", "keep.avi"], "nothing half-written"
    assert analyze.run(str(DEMO_CLIP), annotate=keep, out=io.StringIO(), err=io.StringIO()) == 0
    assert cv2.VideoCapture(str(keep)).get(cv2.CAP_PROP_FRAME_COUNT) == 90


def test_the_summary_lists_equal_shares_in_the_canonical_order_of_the_json_summary():
    """Four emotions a quarter each, seen in an order that is neither canonical nor alphabetical."""
    totals = analyze.Summary("photos", EMOTIONS, 1.0)
    for frame, emotion in enumerate(["happy", "surprise", "neutral", "angry"]):
        totals.add({"frame": frame, "ts": float(frame), "faces": [{"track": 1, "emotion": emotion}]})
    totals.add({"frame": 4, "ts": 4.0, "faces": [{"track": 2, "emotion": "sad"}, {"track": 3, "emotion": "fear"}]})
    totals.add({"frame": 5, "ts": 5.0, "faces": [{"track": 2, "emotion": "happy"}]})
    lines = totals.to_text().splitlines()
    # a tie for predominant goes to the emotion seen first, which leads its equals; the rest are canonical
    assert lines[2] == "track 1: 0.0-3.0 s, 4 frames, happy (happy 25%, angry 25%, surprise 25%, neutral 25%)"
    assert lines[3] == "track 2: 4.0-5.0 s, 2 frames, sad (sad 50%, happy 50%)"
    shares = [label for label, p in totals.to_dict()["per_track"][0]["share"].items() if p]
    assert shares == ["angry", "happy", "surprise", "neutral"]
    assert lines[1].startswith("overall: happy (happy 29%, angry 14%, fear 14%, sad 14%, surprise 14%, neutral 14%)")
