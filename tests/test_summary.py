"""The rolling ``summary`` topic: arithmetic on the real tracker, then the real service on the demo clip."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from helpers import REPO, Broker, edge_command

from edge.config import SummaryConfig
from edge.mqtt.summary import RollingSummary, SummaryWindow
from edge.tools import analyze
from edge.tools.demo import DEMO_CLIP
from edge.vision.emotions import EMOTIONS
from edge.vision.tracker import FaceTracker

HAPPY, SAD = np.eye(7)[EMOTIONS.index("happy")], np.eye(7)[EMOTIONS.index("sad")]


class Collected:
    """A Publisher that keeps what it is given (the summary's only outside contact)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict, bool]] = []

    def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        self.sent.append((topic, json.loads(payload), retain))


def test_window_counts_face_time_per_emotion_visits_and_faces_in_view():
    tracker = FaceTracker(EMOTIONS, smoothing=0.0, max_missing=0.25, min_hits=1)
    window = SummaryWindow(EMOTIONS)
    # 2 s at 10 fps: face A happy throughout; face B sad for the first second, then gone
    for i in range(21):
        ts = i / 10
        boxes, probs = [(0, 0, 50, 50)], [HAPPY]
        if ts < 1.0:
            boxes, probs = [*boxes, (200, 0, 50, 50)], [*probs, SAD]
        events = tracker.update(boxes, np.array(probs), ts)
        window.count(events)
        window.observe([t for t in tracker.tracks if t.last_seen == ts], ts)  # what FrameResult.tracks holds
    body = window.body(device="hall", wall=0.0, window=60.0)
    assert body["seconds"] == pytest.approx(2.0)
    # Each frame adds the 0.1 s since the previous one to every face seen on it: A on the 20 frames after
    # the first, B on those up to its last sighting at 0.9 s (9), not while its track waits to end.
    assert body["face_seconds"] == pytest.approx(2.0 + 0.9)
    assert body["share"]["happy"] == pytest.approx(2.0 / 2.9, abs=1e-4)
    assert body["share"]["sad"] == pytest.approx(0.9 / 2.9, abs=1e-4)
    assert body["predominant"] == "happy"
    assert (body["visits_started"], body["visits_ended"]) == (2, 1)
    assert body["faces_mean"] == pytest.approx(2.9 / 2.0)
    assert body["window"] == 60.0 and body["schema"] == 1 and body["device"] == "hall"


def test_a_stalled_camera_counts_one_second_and_an_empty_room_says_none():
    window = SummaryWindow(EMOTIONS)
    tracker = FaceTracker(EMOTIONS, max_missing=100, min_hits=1)
    tracker.update([(0, 0, 50, 50)], np.array([HAPPY]), 0.0)
    window.observe(tracker.tracks, 0.0)
    window.observe(tracker.tracks, 30.0)  # 30 s between two frames
    assert window.body(device="d", wall=0, window=30)["face_seconds"] == 1.0
    empty = SummaryWindow(EMOTIONS).body(device="d", wall=0, window=60)
    assert (empty["predominant"], empty["faces_mean"], set(empty["share"].values())) == ("none", 0.0, {0.0})


def test_rolling_summary_publishes_retained_every_interval_and_starts_afresh():
    now = [0.0]
    publisher = Collected()
    summary = RollingSummary(SummaryConfig(interval=60), publisher, "emotion-edge/hall/summary", "hall", EMOTIONS,
                             clock=lambda: now[0])  # fmt: skip
    tracker = FaceTracker(EMOTIONS, min_hits=1)
    for i in range(200):  # 100 s of frames at 2 fps
        now[0] = i / 2
        summary.count(tracker.update([(0, 0, 50, 50)], np.array([HAPPY]), i / 2))
        summary.observe(tracker.tracks, i / 2)
    assert [(topic, retain) for topic, _, retain in publisher.sent] == [("emotion-edge/hall/summary", True)]
    first = publisher.sent[0][1]
    assert (first["window"], first["seconds"], first["visits_started"]) == (60.0, 60.0, 1)
    summary.publish()  # at stop: the rest of the window
    second = publisher.sent[1][1]
    assert (second["seconds"], second["visits_started"], second["share"]["happy"]) == (39.5, 0, 1.0)

    off = Collected()
    RollingSummary(SummaryConfig(interval=0), off, "b", "d", EMOTIONS).publish()
    assert off.sent == []


def test_service_publishes_summaries_that_add_up_to_what_analyze_saw(broker: Broker, subscribe, edge_env):
    sub = subscribe(broker.port, ["emotion-edge/testpi/summary", "emotion-edge/testpi/events"])
    # the service looks at every face on every frame, as analyze does, so the two saw the same labels
    env = {**edge_env, "EMOTION_EDGE_SUMMARY_INTERVAL": "0.5", "EMOTION_EDGE_HOMEASSISTANT_ENABLED": "false",
           "EMOTION_EDGE_TRACKER_RECLASSIFY": "0"}  # fmt: skip
    done = subprocess.run(
        edge_command("run", "--source", str(DEMO_CLIP), "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port),
                     "--device-id", "testpi"),
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    last = sub.wait_for("emotion-edge/testpi/summary", lambda m: json.loads(m.payload)["visits_ended"] > 0)
    events = [json.loads(m.payload) for m in sub.on("emotion-edge/testpi/events")]
    summaries = [json.loads(m.payload) for m in sub.on("emotion-edge/testpi/summary")]
    assert last and summaries
    assert (
        sum(s["visits_started"] for s in summaries) == sum(e["type"] == "start" for e in events) == 4
    )  # the demo: four people
    assert sum(s["visits_ended"] for s in summaries) == sum(e["type"] == "end" for e in events) == 4
    face_seconds = {label: sum(s["share"][label] * s["face_seconds"] for s in summaries) for label in EMOTIONS}
    # analyze counts the frames each face was seen; the service weighs them by the time between frames
    # (a face's first frame adds nothing), so the two agree to within a few frames
    totals = analyze.Summary("clip", EMOTIONS, 15.0)
    for _, record in analyze.Analysis.open(str(DEMO_CLIP)).frames(progress=False):
        totals.add(record)
    per_track_frames = sum(t["frames"] for t in totals.to_dict()["per_track"])
    assert sum(face_seconds.values()) == pytest.approx(per_track_frames / 15.0, abs=0.3)
    overall = totals.to_dict()["overall"]["share"]
    for label in EMOTIONS:
        assert face_seconds[label] / sum(face_seconds.values()) == pytest.approx(overall[label], abs=0.04)

    retained = subscribe(broker.port, ["emotion-edge/testpi/summary"])
    assert retained.wait_for("emotion-edge/testpi/summary").retain
