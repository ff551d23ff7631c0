"""FaceTracker on synthetic box sequences: ids, smoothing, hysteresis and the event stream."""

from __future__ import annotations

import numpy as np
import pytest

from edge.vision.emotions import EMOTIONS
from edge.vision.tracker import CHANGE, END, START, FaceTracker


def probs(**scores: float) -> np.ndarray:
    """A probability row: the named emotions get their scores, the rest share what is left."""
    rest = (1.0 - sum(scores.values())) / (len(EMOTIONS) - len(scores))
    return np.array([scores.get(e, rest) for e in EMOTIONS], dtype=np.float32)


HAPPY = probs(happy=0.8)
SAD = probs(sad=0.8)


def tracker(**kwargs) -> FaceTracker:
    return FaceTracker(EMOTIONS, **kwargs)


def test_faces_keep_their_ids_while_they_move():
    t = tracker()
    events = t.update([(100, 100, 80, 80), (400, 100, 80, 80)], np.stack([HAPPY, SAD]), 0.0)
    assert [(e.kind, e.track, e.emotion) for e in events] == [(START, 1, "happy"), (START, 2, "sad")]
    for step in range(1, 10):  # both drift right, listed in the opposite order
        boxes = [(400 + 6 * step, 100, 80, 80), (100 + 6 * step, 100 + step, 82, 82)]
        assert t.update(boxes, np.stack([SAD, HAPPY]), step / 10) == []
    assert {track.id: track.box for track in t.tracks} == {1: (154, 109, 82, 82), 2: (454, 100, 80, 80)}


def test_a_jump_without_overlap_still_matches_when_the_centre_is_close():
    t = tracker()
    t.update([(100, 100, 100, 100)], HAPPY[None], 0.0)
    # a diagonal jump: IoU with the old box is 0.28 (< 0.3), but the centre moved only 0.48 face widths
    assert t.update([(134, 134, 100, 100)], HAPPY[None], 0.1) == []
    assert [track.id for track in t.tracks] == [1]
    # a face far away is somebody else
    events = t.update([(134, 134, 100, 100), (400, 300, 100, 100)], np.stack([HAPPY, HAPPY]), 0.2)
    assert [(e.kind, e.track) for e in events] == [(START, 2)]


def test_scores_are_an_exponential_moving_average_with_a_time_constant():
    t = tracker(smoothing=0.2)  # seconds: after 0.1 s the past keeps exp(-0.1 / 0.2) of its weight
    t.update([(0, 0, 50, 50)], HAPPY[None], 0.0)
    t.update([(0, 0, 50, 50)], SAD[None], 0.1)
    (track,) = t.tracks
    past = np.exp(-0.5)
    expected = past * HAPPY + (1 - past) * SAD
    assert track.scores == {e: pytest.approx(float(p), abs=1e-4) for e, p in zip(EMOTIONS, expected)}
    assert track.emotion == "happy" and track.confidence == pytest.approx(expected[3], abs=1e-4)


def test_hysteresis_holds_the_label_until_the_new_one_leads_by_the_margin():
    t = tracker(smoothing=0.0, hysteresis=0.2)  # no smoothing: only hysteresis is under test
    t.update([(0, 0, 50, 50)], probs(happy=0.5, sad=0.3)[None], 0.0)
    assert t.update([(0, 0, 50, 50)], probs(happy=0.35, sad=0.45)[None], 0.1) == []  # sad leads by 0.10
    assert t.update([(0, 0, 50, 50)], probs(happy=0.3, sad=0.49)[None], 0.2) == []  # by 0.19
    (event,) = t.update([(0, 0, 50, 50)], probs(happy=0.2, sad=0.6)[None], 0.3)  # by 0.40
    assert (event.kind, event.emotion, event.confidence) == (CHANGE, "sad", pytest.approx(0.6))
    assert (event.started, event.ts, event.duration) == (0.0, 0.3, 0.3)
    # and back only with the same margin the other way
    assert t.update([(0, 0, 50, 50)], probs(happy=0.45, sad=0.4)[None], 0.4) == []
    assert t.tracks[0].emotion == "sad"


def test_smoothing_stops_a_one_frame_flicker():
    t = tracker()  # the defaults: smoothing 0.3 s, hysteresis 0.1
    t.update([(0, 0, 50, 50)], HAPPY[None], 0.0)
    for i in range(1, 20):
        row = SAD if i % 7 == 0 else HAPPY  # a misclassified frame now and then
        assert t.update([(0, 0, 50, 50)], row[None], i / 10) == []


def test_a_face_ends_max_missing_seconds_after_it_was_last_seen():
    t = tracker(max_missing=1.0)
    t.update([(0, 0, 50, 50)], HAPPY[None], 10.0)
    t.update([(2, 0, 50, 50)], HAPPY[None], 10.5)
    assert t.update([], np.zeros((0, 7)), 11.5) == []  # unseen for exactly max_missing: still there
    assert len(t.tracks) == 1
    (event,) = t.update([], np.zeros((0, 7)), 11.6)
    assert (event.kind, event.track, event.box) == (END, 1, (2, 0, 50, 50))
    assert (event.started, event.ts) == (10.0, 10.5)  # dated the last sighting
    assert t.tracks == []
    # the same place later is a new face with a new id
    (again,) = t.update([(2, 0, 50, 50)], HAPPY[None], 12.0)
    assert (again.kind, again.track) == (START, 2)


def test_close_ends_every_live_track_at_the_stop_time():
    t = tracker()
    t.update([(0, 0, 50, 50), (200, 0, 50, 50)], np.stack([HAPPY, SAD]), 1.0)
    events = t.close(3.0)
    assert sorted((e.kind, e.track, e.emotion, e.ts) for e in events) == [(END, 1, "happy", 3.0), (END, 2, "sad", 3.0)]
    assert t.tracks == [] and t.close(4.0) == []


def test_boxes_and_probabilities_must_pair_up():
    with pytest.raises(ValueError, match="2 boxes but 1 probability rows"):
        tracker().update([(0, 0, 5, 5), (9, 9, 5, 5)], HAPPY[None], 0.0)


def test_a_face_seen_in_one_frame_only_makes_no_events_with_min_hits():
    t = tracker(min_hits=2, max_missing=0.5)
    face, curtain = (100, 100, 80, 80), (400, 300, 60, 60)
    assert t.update([face, curtain], np.stack([HAPPY, SAD]), 0.0) == []  # both tentative
    assert t.tracks == []
    events = t.update([face], HAPPY[None], 0.1)  # the curtain is gone: forgotten without a word
    assert [(e.kind, e.track, e.emotion, e.started, e.ts) for e in events] == [(START, 1, "happy", 0.0, 0.1)]
    assert [track.id for track in t.tracks] == [1]
    for step in range(2, 12):
        assert [e.kind for e in t.update([face], HAPPY[None], step / 10)] == []
    events = t.update([], np.empty((0, 7)), 2.0)
    assert [(e.kind, e.track) for e in events] == [(END, 1)]


def test_a_tentative_face_must_be_seen_in_frames_in_a_row():
    t = tracker(min_hits=3)
    box = (100, 100, 80, 80)
    t.update([box], HAPPY[None], 0.0)
    t.update([box], HAPPY[None], 0.1)
    assert t.update([], np.empty((0, 7)), 0.2) == []  # missed once: counting starts again
    assert t.update([box], HAPPY[None], 0.3) == [] and t.update([box], HAPPY[None], 0.4) == []
    events = t.update([box], HAPPY[None], 0.5)
    assert [(e.kind, e.track, e.started) for e in events] == [(START, 1, 0.3)]
    assert t.close(0.6)[0].kind == END and t.tracks == []
