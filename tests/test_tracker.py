"""FaceTracker on synthetic box sequences: ids, smoothing, hysteresis and the event stream."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import read_image

from edge.vision.emotions import EMOTIONS
from edge.vision.tracker import CHANGE, END, START, FaceTracker, thumbnail

FER_TEST = Path(__file__).resolve().parent / "fixtures" / "fer" / "test"


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
    # and so is one beside it: IoU 0.18, centres 0.7 face widths apart, past the half a width a jump may go
    events = t.update([(204, 134, 100, 100), (400, 300, 100, 100)], np.stack([HAPPY, HAPPY]), 0.3)
    assert [(e.kind, e.track) for e in events] == [(START, 3)]


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
    t = tracker()  # the defaults: smoothing 0.15 s, hysteresis 0.1
    t.update([(0, 0, 50, 50)], HAPPY[None], 0.0)
    for i in range(1, 20):
        row = SAD if i % 7 == 0 else HAPPY  # a misclassified frame now and then
        assert t.update([(0, 0, 50, 50)], row[None], i / 10) == []
    # while a face that turns sad for good is named so within a few frames
    changes = [e for i in range(20, 25) for e in t.update([(0, 0, 50, 50)], SAD[None], i / 10)]
    assert [(e.kind, e.emotion) for e in changes] == [(CHANGE, "sad")]


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


def test_expire_ends_tracks_by_the_clock_when_no_frame_comes():
    """A camera that stops delivering: no update() will come, so the clock ends the faces, dated their
    last sighting, and only those unseen for longer than max_missing."""
    t = tracker(max_missing=1.0)
    t.update([(100, 100, 80, 80)], HAPPY[None], 0.0)
    t.update([(100, 100, 80, 80)], HAPPY[None], 0.2)
    t.update([(400, 100, 80, 80)], SAD[None], 0.5)  # the first face missed, not yet for max_missing
    assert t.expire(1.0) == [] and len(t.tracks) == 2
    ended = t.expire(1.3)
    assert [(e.kind, e.track, e.ts, e.duration) for e in ended] == [(END, 1, 0.2, 0.2)]
    assert [(e.kind, e.track) for e in t.expire(1.6)] == [(END, 2)]
    assert t.tracks == [] and t.expire(10.0) == []


def label_timeline(fps: float, **kwargs) -> list[tuple[str, float]]:
    """One synthetic face: happy for 2 s, then sad for 2 s, then happy again, sampled at ``fps``;
    returns (label, when) for the start and every change."""
    t = tracker(**kwargs)
    timeline = []
    for n in range(round(6 * fps)):
        ts = n / fps
        row = SAD if 2.0 <= ts < 4.0 else HAPPY
        timeline += [(e.emotion, e.ts) for e in t.update([(0, 0, 50, 50)], row[None], ts)]
    return timeline


def test_smoothing_is_a_time_constant_so_the_label_timeline_does_not_depend_on_the_frame_rate():
    slow, fast = label_timeline(5, smoothing=0.5), label_timeline(60, smoothing=0.5)
    assert [label for label, _ in slow] == [label for label, _ in fast] == ["happy", "sad", "happy"]
    # the changes come at the same time, to within one frame at the slower rate
    assert all(abs(a - b) <= 1 / 5 for (_, a), (_, b) in zip(slow, fast))
    # and not at once: the average lags the new emotion by a fraction of the time constant
    assert 2.0 < fast[1][1] < 2.5


def test_a_strong_steady_change_moves_the_label_fast_and_a_flicker_is_held():
    # a long time constant that, alone, would take over a second to follow
    t = tracker(smoothing=2.0, steady=0.3)
    box = [(0, 0, 50, 50)]
    t.update(box, HAPPY[None], 0.0)
    for n in range(1, 30):  # a misread every third frame: never a streak, the label holds
        assert t.update(box, (SAD if n % 3 == 0 else HAPPY)[None], n / 10) == []
    changes = [(e.emotion, e.ts) for n in range(30, 50) for e in t.update(box, SAD[None], n / 10)]
    assert changes == [("sad", pytest.approx(3.3))]  # 0.3 s of sad on every look


def thumbs_of(*names: str) -> list[np.ndarray]:
    return [thumbnail(read_image(FER_TEST / name, cv2.IMREAD_GRAYSCALE)) for name in names]


def test_a_new_person_in_the_spot_another_just_left_starts_a_new_track():
    first, second = thumbs_of("happy/PublicTest_11211241.jpg", "angry/PublicTest_12919755.jpg")
    t = tracker(appearance=0.3)
    box = (100, 100, 80, 80)
    assert [e.kind for e in t.update([box], HAPPY[None], 0.0, [first])] == [START]
    for n in range(1, 5):  # the same person, a little noise on the picture
        assert t.update([box], HAPPY[None], n / 10, [first + 0.01 * np.sin(np.arange(first.size) * n)]) == []
    # a cut: another person in the very same box
    events = t.update([box], probs(angry=0.8)[None], 0.5, [second])
    assert [(e.kind, e.track, e.emotion) for e in events] == [(START, 2, "angry")]
    # the first person's track ends max_missing after it was last seen, its label never taken over
    (end,) = t.update([box], probs(angry=0.8)[None], 1.6, [second])
    assert (end.kind, end.track, end.emotion, end.ts) == (END, 1, "happy", 0.4)
    # without the appearance check the newcomer inherits the old track
    t = tracker()
    t.update([box], HAPPY[None], 0.0, [first])
    assert t.update([box], probs(angry=0.8)[None], 0.1, [second]) == []
    assert [track.id for track in t.tracks] == [1]


def test_the_first_frames_of_a_confirmed_face_are_kept_and_a_one_frame_face_stays_out():
    t = tracker(min_hits=3)
    face, curtain = (100, 100, 80, 80), (400, 300, 60, 60)
    t.update([face, curtain], np.stack([HAPPY, SAD]), 0.0)
    t.update([face], HAPPY[None], 0.1)
    (start,) = t.update([face], HAPPY[None], 0.2)
    assert (start.kind, start.started, start.ts) == (START, 0.0, 0.2)  # dated the first sighting
    (track,) = t.tracks
    assert track.sightings == [(0.0, face), (0.1, face), (0.2, face)]


def test_a_box_framed_much_bigger_is_matched_by_position_not_by_its_look():
    """The cascade's box around one face now and then comes out a quarter bigger: the same face framed
    differently looks like another, so such a box is not compared by look, and the track goes on."""
    first, other = thumbs_of("happy/PublicTest_11211241.jpg", "angry/PublicTest_12919755.jpg")
    t = tracker(appearance=0.3)
    assert [e.kind for e in t.update([(100, 100, 80, 80)], HAPPY[None], 0.0, [first])] == [START]
    assert t.update([(90, 90, 100, 100)], HAPPY[None], 0.1, [other]) == []  # 25% bigger, looking unlike
    assert [(track.id, track.box) for track in t.tracks] == [(1, (90, 90, 100, 100))]
    # its look is now the track's: a like-sized box that looks like someone else is someone else
    events = t.update([(90, 90, 100, 100)], HAPPY[None], 0.2, [first])
    assert [(e.kind, e.track) for e in events] == [(START, 2)]
