"""``edge.analysis`` (fer's Video, over the service's pipeline) against ``emotion-edge analyze`` on the demo clip."""

from __future__ import annotations

import io
import json
import math
import subprocess

import pandas as pd
import pytest
from helpers import REPO, edge_command

from edge.analysis import Recording, analyze_video
from edge.config import Config
from edge.tools import analyze
from edge.tools.demo import DEMO_CLIP
from edge.vision.emotions import EMOTIONS


@pytest.fixture(scope="module")
def cli_raw_lines():
    done = subprocess.run(
        edge_command("analyze", str(DEMO_CLIP), "--raw", "--summary", "/dev/null"),
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture(scope="module")
def recording() -> Recording:
    return analyze_video(DEMO_CLIP, raw=True, progress=False)


def test_to_pandas_matches_the_cli_jsonl_row_for_row(recording, cli_raw_lines):
    assert recording.rows == cli_raw_lines
    df = recording.to_pandas()
    assert list(df.columns) == analyze.csv_header(EMOTIONS, raw=True)
    expected = [(r["frame"], f) for r in cli_raw_lines for f in (r["faces"] or [None])]
    # every face counted from its first frame, no frame without one (205 faces; one may be missed once or twice)
    assert 203 <= len(df) == len(expected) <= 205 and all(r["faces"] for r in cli_raw_lines)
    for row, (frame, face) in zip(df.itertuples(index=False), expected):
        assert row.frame == frame
        if face is None:
            assert math.isnan(row.track) and pd.isna(row.emotion)
            continue
        assert (row.track, [row.x, row.y, row.w, row.h], row.emotion) == (face["track"], face["box"], face["emotion"])
        assert [getattr(row, label) for label in EMOTIONS] == list(face["scores"].values())
        raw = [getattr(row, f"raw_{label}") for label in EMOTIONS]
        assert raw == list(face["raw"].values()) if face["raw"] else all(pd.isna(v) for v in raw)


def test_raw_scores_are_what_the_tracker_smoothed(recording):
    """smoothed(t) = p * smoothed(t') + (1 - p) * raw(t), p = exp(-(t - t') / smoothing), from the face's
    previous classified frame t' (the records round scores to 4 decimals and times to 3, so to 0.003), except
    where a steady new emotion restarted the average from the raw scores themselves. A face's first
    min_hits - 1 frames are reported once it is confirmed, with the scores it starts with, so the check
    begins after them."""
    tracker = Config().tracker
    tau = tracker.smoothing
    last: dict[int, tuple[float, dict[str, float]]] = {}
    seen: dict[int, int] = {}
    checked = restarted = 0
    for record in recording.rows:
        for face in record["faces"]:
            seen[face["track"]] = seen.get(face["track"], 0) + 1
            if seen[face["track"]] > tracker.min_hits and face["raw"] is not None:
                then, before = last[face["track"]]
                past = math.exp(-(record["ts"] - then) / tau)
                expected = {label: past * before[label] + (1 - past) * face["raw"][label] for label in EMOTIONS}
                if face["scores"] == face["raw"] != pytest.approx(expected, abs=3e-3):
                    restarted += 1
                else:
                    assert face["scores"] == pytest.approx(expected, abs=3e-3)
                    checked += 1
            if face["raw"] is not None:  # a held face is not classified: its average waits for the next look
                last[face["track"]] = (record["ts"], face["scores"])
    assert checked > 150 and restarted < checked / 10
    assert any(face["raw"] != face["scores"] for record in recording.rows for face in record["faces"] if face["raw"])


def test_summary_is_analyze_summary_and_plot_is_a_figure(recording, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert analyze.run(str(DEMO_CLIP), summary=tmp_path / "s.json", out=out, err=err) == 0
    assert recording.summary() == json.loads((tmp_path / "s.json").read_text())
    figure = recording.plot()
    assert len(figure.axes) == 2 + len(EMOTIONS)  # shares, visits, one panel per emotion
    assert recording.report(tmp_path / "r.png").stat().st_size > 10_000


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere():
    plain = io.StringIO()
    progress = analyze.Progress(90, plain, every=0.0)
    for _ in range(3):
        progress.update()
    progress.close()
    assert plain.getvalue().splitlines()[-1].startswith("analyze: frame 3 of 90 (3%), ")
    assert "\r" not in plain.getvalue()

    bar = io.StringIO()
    progress = analyze.Progress(90, bar, bar=True)
    progress.update()
    progress.close()
    assert "\r" in bar.getvalue() and "| 0/90 [" in bar.getvalue()  # tqdm drew its bar


def test_a_missing_video_is_named():
    with pytest.raises(Exception, match=r"nowhere\.mp4"):
        analyze_video("nowhere.mp4")
