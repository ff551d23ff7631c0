"""The service end to end: ``python -m edge run`` on the bundled clip of real faces, with the shipped
model, publishing to a real mosquitto on a free port; what a subscriber receives is the contract. What
it tells systemd arrives on a real datagram socket (NotifySocket); the Pi camera is the stand-in
picamera2 module of test_sources, on the subprocess's path (the one part that cannot exist here)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from helpers import DEVICE, REPO, Broker, NotifySocket, ServiceProcess, Subscriber, free_port, wait_until
from standin_picamera2 import standin_env

from edge.mqtt import payloads
from edge.systemd import Watchdog, notify, watchdog_interval
from edge.tools.demo import DEMO_CLIP
from edge.vision.emotions import EMOTIONS

BASE = f"emotion-edge/{DEVICE}"
EVENT_KEYS = {"schema", "type", "ts", "device", "track", "emotion", "confidence", "scores", "box", "duration"}
EVENT_KEYS |= {"run", "seq"}  # the event's id, for consumers dropping the duplicates of at-least-once delivery
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def bodies(sub: Subscriber, leaf: str) -> list[dict]:
    return [json.loads(m.payload) for m in sub.on(f"{BASE}/{leaf}")]


def error_lines(run: ServiceProcess) -> list[str]:
    return [line for line in run.lines if " ERROR " in f" {line}"]


def test_run_on_the_demo_clip_publishes_the_contract(
    broker: Broker, subscribe: Callable[..., Subscriber], service: Callable[..., ServiceProcess]
) -> None:
    sub = subscribe(broker.port, [f"{BASE}/#", "homeassistant/#"])
    run = service(broker.port, "--source", str(DEMO_CLIP))
    assert run.wait() == 0, run.log

    availability = [m.text for m in sub.on(f"{BASE}/availability")]
    assert availability == ["online", "offline"]

    events = bodies(sub, "events")
    assert events, f"no events from a clip with faces:\n{run.log}"
    assert all(not m.retain and m.qos == 1 for m in sub.on(f"{BASE}/events"))
    for e in events:
        assert set(e) == EVENT_KEYS | ({"previous"} if e["type"] == "change" else set())
        assert e["schema"] == payloads.SCHEMA and e["device"] == DEVICE and ISO_UTC.match(e["ts"])
        assert e["type"] in ("start", "change", "end") and e["emotion"] in EMOTIONS
        assert list(e["scores"]) == list(EMOTIONS) and abs(sum(e["scores"].values()) - 1) < 0.01
        assert e["confidence"] == e["scores"][e["emotion"]]
        assert len(e["box"]) == 4 and all(isinstance(v, int) for v in e["box"]) and e["box"][2] > 0
        assert e["duration"] >= 0
    by_track: dict[int, list[str]] = {}
    for e in events:
        by_track.setdefault(e["track"], []).append(e["type"])
    for track, kinds in by_track.items():
        assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("end") == 1, (track, kinds)
        dated = [e["ts"] for e in events if e["track"] == track]  # the clip plays faster than real time,
        assert dated[0] <= dated[-1], (track, dated)  # and yet no end is dated before its start
    # A change says what it changed from: the emotion of the track's event before it.
    changes = 0
    for track in by_track:
        story = [e for e in events if e["track"] == track]
        for before, e in zip(story, story[1:]):
            if e["type"] == "change":
                assert e["previous"] == before["emotion"] != e["emotion"], (track, before, e)
                changes += 1
    assert changes, f"the clip's faces change expression, so there are change events: {by_track}"

    states = bodies(sub, "state")
    assert all(m.retain is False for m in sub.on(f"{BASE}/state"))  # live delivery; retained checked below
    for s in states:
        assert set(s) == {"schema", "ts", "device", "faces", "emotion", "confidence", "scores", "paused"}
        assert s["paused"] is False
        assert s["emotion"] in (*EMOTIONS, "none") and list(s["scores"]) == list(EMOTIONS)
    assert states[0]["faces"] == 0 and states[0]["emotion"] == "none"
    assert max(s["faces"] for s in states) >= 1
    assert states[-1]["faces"] == 0, "every track has ended at the end of the clip"

    stats = bodies(sub, "stats")[-1]
    assert stats["schema"] == payloads.SCHEMA and stats["frames"] > 0 and stats["fps"] > 0
    assert set(stats["stages_ms"]) == {"capture", "detect", "classify", "track", "publish"}
    assert stats["stages_ms"]["capture"] > 0, "decoding a frame takes time: the capture stage is measured"
    assert {"frames_dropped", "queue_depth", "events_dropped", "cpu_temperature", "uptime"} <= set(stats)
    assert re.fullmatch(r"[0-9a-f]{64}", stats["model_sha256"])
    assert any(m.topic.startswith("homeassistant/device/emotion_edge_") for m in sub.messages)

    # No image leaves the device: every payload is small text (discovery, a description, aside).
    assert all(len(m.payload) < 2000 for m in sub.messages if m.topic.startswith(BASE))

    # Retained topics, as a subscriber arriving afterwards (Home Assistant after a restart) sees them.
    late = subscribe(broker.port, [f"{BASE}/#"])
    for leaf in ("availability", "state", "stats"):
        m = late.wait_for(f"{BASE}/{leaf}")
        assert m.retain, f"{leaf} must be retained"
    assert late.on(f"{BASE}/availability")[0].text == "offline"
    assert json.loads(late.on(f"{BASE}/state")[0].payload) == states[-1]
    assert not late.on(f"{BASE}/events"), "events are not retained"


def test_last_will_marks_the_device_offline_after_sigkill(
    broker: Broker, subscribe: Callable[..., Subscriber], service: Callable[..., ServiceProcess]
) -> None:
    sub = subscribe(broker.port, [f"{BASE}/availability"])
    run = service(broker.port, "--source", str(DEMO_CLIP), "--loop")
    sub.wait_for(f"{BASE}/availability", lambda m: m.text == "online", timeout=30)
    run.process.send_signal(signal.SIGKILL)
    run.wait()
    # No goodbye was sent: this "offline" is the broker publishing the will when the socket died.
    sub.wait_for(f"{BASE}/availability", lambda m: m.text == "offline", timeout=30)
    late = subscribe(broker.port, [f"{BASE}/availability"])
    m = late.wait_for(f"{BASE}/availability")
    assert (m.text, m.retain) == ("offline", True)
    assert "stopped after" not in run.log


def test_a_file_replayed_in_real_time_dates_its_events_as_a_camera_would(
    broker: Broker, subscribe: Callable[..., Subscriber], service: Callable[..., ServiceProcess]
) -> None:
    """--realtime (source.realtime): the clip plays at its own rate, so an end comes a visit's duration after its start
    on the wall clock too, where a file read as fast as it is processed squeezes the visits together."""
    sub = subscribe(broker.port, [f"{BASE}/events"])
    run = service(broker.port, "--source", str(DEMO_CLIP), "--realtime")
    assert run.wait() == 0, run.log
    assert f"source {DEMO_CLIP} (in real time)" in run.log
    events = bodies(sub, "events")
    visits = [(e, end) for e in events for end in events if e["type"] == "start" and end["type"] == "end"
              and end["track"] == e["track"]]  # fmt: skip
    assert len(visits) >= 3 and max(end["duration"] for _, end in visits) > 1.0, events
    for start, end in visits:
        wall = (parse_ts(end["ts"]) - parse_ts(start["ts"])).total_seconds()
        # never sooner than the visit lasted; later only by what a loaded machine lags behind the clip
        assert -0.25 < wall - end["duration"] < 1.0, (start, end)


def test_the_ready_line_names_the_interpreter_threads_the_setting_resolved_to(
    broker: Broker, service: Callable[..., ServiceProcess]
) -> None:
    auto = service(broker.port, "--source", str(DEMO_CLIP), "--loop")
    auto.wait_for_log("ready in", timeout=30)
    expected = max(1, min(4, len(os.sched_getaffinity(0)) - 1))  # 0, the default: a core spared, at most 4
    assert f"(ai_edge_litert, {expected} thread(s))" in auto.log, auto.log
    three = service(broker.port, "--source", str(DEMO_CLIP), "--loop", env={"EMOTION_EDGE_CLASSIFIER_NUM_THREADS": "3"})
    three.wait_for_log("ready in", timeout=30)
    assert "(ai_edge_litert, 3 thread(s))" in three.log, three.log


def test_sigterm_stops_cleanly_ending_live_tracks(
    broker: Broker, subscribe: Callable[..., Subscriber], service: Callable[..., ServiceProcess]
) -> None:
    sub = subscribe(broker.port, [f"{BASE}/#"])
    run = service(broker.port, "--source", str(DEMO_CLIP), "--loop")
    sub.wait_for(f"{BASE}/events", lambda m: json.loads(m.payload)["type"] == "start", timeout=30)
    run.process.send_signal(signal.SIGTERM)
    assert run.wait() == 0, run.log
    assert "SIGTERM: stopping" in run.log and "stopped after" in run.log
    sub.wait_for(f"{BASE}/availability", lambda m: m.text == "offline")
    started = {e["track"] for e in bodies(sub, "events") if e["type"] == "start"}
    ended = {e["track"] for e in bodies(sub, "events") if e["type"] == "end"}
    assert started == ended, "a clean stop ends every live track"
    assert bodies(sub, "state")[-1]["faces"] == 0


def test_broker_down_at_start_then_up_delivers_the_events_made_meanwhile(
    broker_factory: Callable[..., Broker], subscribe: Callable[..., Subscriber], service: Callable[..., ServiceProcess]
) -> None:
    broker = broker_factory(persistent=True).start()
    subscribe(broker.port, [f"{BASE}/events"], durable_id="durable-service-test").close()
    broker.stop()

    run = service(broker.port, "--source", str(DEMO_CLIP), "--loop", "--log-level", "debug")
    run.wait_for_log("unreachable")
    run.wait_for_log("event start track 1 ", timeout=30)  # made while no broker listens
    outage_ended = datetime.now().astimezone()
    broker.start()
    run.wait_for_log("connected to 127.0.0.1", timeout=60)
    sub = subscribe(broker.port, [f"{BASE}/events"], durable_id="durable-service-test")
    first = sub.wait_for(f"{BASE}/events")
    body = json.loads(first.payload)
    assert (body["type"], body["track"]) == ("start", 1), "the queue is delivered oldest first"
    assert parse_ts(body["ts"]) < outage_ended
    run.process.send_signal(signal.SIGTERM)
    assert run.wait() == 0, run.log


def test_sd_notify_ready_watchdog_and_stopping(
    broker: Broker, tmp_path: Path, service: Callable[..., ServiceProcess]
) -> None:
    """A real AF_UNIX datagram socket standing in for systemd's notify socket."""
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(30)
        env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}
        run = service(broker.port, "--source", str(DEMO_CLIP), "--max-frames", "20", env=env)
        received: list[str] = []
        while not any("STOPPING=1" in m for m in received):
            try:
                received.append(sock.recv(4096).decode())
            except TimeoutError:
                pytest.fail(f"no STOPPING=1 from the service; got {received}\n{run.log}")
        assert run.wait() == 0, run.log
    assert received[0].startswith("READY=1")
    assert "WATCHDOG=1" in received[1:-1]


def test_a_camera_missing_at_boot_is_waited_for_and_what_no_retry_fixes_still_exits_1(
    broker: Broker, subscribe: Callable[..., Subscriber], service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    """A camera that boots slower than the Pi, or is not plugged in yet, is retried as one lost mid-run is,
    instead of exit 1 five times and a unit dead until someone runs reset-failed."""
    sub = subscribe(broker.port, [f"{BASE}/camera"])
    with NotifySocket(tmp_path / "notify.sock") as systemd:
        run = service(broker.port, "--source", "/dev/video9", env=systemd.env(watchdog_usec=1_000_000))
        run.wait_for_line("ready in", timeout=30)
        assert sub.wait_for(f"{BASE}/camera").text == "offline"
        wait_until(lambda: len(systemd.pings()) >= 6, 10, "watchdog pings while the camera is looked for")
        assert run.process.poll() is None, run.log
        run.process.send_signal(signal.SIGTERM)
        assert run.wait() == 0, run.log
    assert systemd.messages[0][1] == "READY=1\nSTATUS=camera lost, reconnecting: /dev/video9"
    warnings = [line for line in run.lines if " WARNING " in line and "MQTT" not in line]
    assert len(warnings) == 1, run.log
    said = "WARNING /dev/video9: no such camera device; starting without it, retrying every 5 s at most"
    assert warnings[0].endswith(said)
    lasting = [(str(tmp_path / "missing.mp4"), "missing.mp4: no such file"), ("rtsp://cam:port/", "not a valid URL")]
    if importlib.util.find_spec("picamera2") is None:
        lasting.append(("picamera2", "picamera2: not installed"))
    for spec, said in lasting:
        failed = service(broker.port, "--source", spec)
        assert failed.wait() == 1, failed.log
        assert len(error_lines(failed)) == 1 and said in error_lines(failed)[0], failed.log


def test_a_still_too_short_for_a_track_is_refused_pointing_at_analyze_and_looped_it_publishes(
    broker: Broker, subscribe: Callable[..., Subscriber], service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    """One photo is one frame and a track needs tracker.min_hits (2) of them: without the refusal `run photo.jpg`
    published a state of 0 faces and exited 0. A folder of frames long enough plays, and --loop makes the
    photo a stand-in camera, whose face is published."""
    photo = REPO / "tests" / "fixtures" / "media" / "one_face.jpg"
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.jpg").write_bytes(photo.read_bytes())
    sub = subscribe(broker.port, [f"{BASE}/#"])
    for spec in (str(photo), str(tmp_path / "one")):
        refused = service(broker.port, "--source", spec)
        assert refused.wait() == 1, refused.log
        assert len(refused.lines) == 1, refused.log
        assert refused.lines[0].endswith(
            f"ERROR {spec}: 1 still frame, and a face is published once seen in tracker.min_hits (2) frames; "
            f"for photos use `emotion-edge analyze {spec}` (or --loop to repeat as a camera would)"
        ), refused.log
    assert not sub.on(f"{BASE}/state"), "a refused start publishes nothing"

    looped = service(broker.port, "--source", str(photo), "--loop", "--max-frames", "5")
    assert looped.wait() == 0, looped.log
    starts = [e for e in bodies(sub, "events") if e["type"] == "start"]
    assert len(starts) == 1 and starts[0]["emotion"] in EMOTIONS, looped.log
    assert max(s["faces"] for s in bodies(sub, "state")) == 1


def test_a_start_failure_after_the_models_load_is_its_one_line_and_exit_code_not_an_abort(
    broker: Broker, service: Callable[..., ServiceProcess]
) -> None:
    """A capture thread started before the failure aborted the interpreter at exit (rc 134, "terminate called
    without an active exception"), a race it mostly lost; three starts make a pass mean something."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = {"EMOTION_EDGE_PREVIEW_ENABLED": "true", "EMOTION_EDGE_PREVIEW_PORT": str(busy.getsockname()[1])}
        for _ in range(3):
            run = service(broker.port, "--source", str(DEMO_CLIP), "--loop", env=env)
            assert run.wait() == 78, run.log
            assert len(run.lines) == 1, run.log
            assert "ERROR preview.bind/port: cannot listen on 127.0.0.1:" in run.lines[0]


def test_the_camera_password_stays_out_of_the_log_and_status_paused_or_reconnecting(
    broker: Broker, service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    url = f"rtsp://admin:hunter2@127.0.0.1:{free_port()}/cam"  # nothing listens there: the camera is away
    shown = url.replace(":hunter2@", ":***@")
    (tmp_path / "enabled").write_text("OFF\n")  # the pause switch as a previous run left it
    for state, status in ((tmp_path, f"paused: {shown}"), (tmp_path / "fresh", f"camera lost, reconnecting: {shown}")):
        state.mkdir(exist_ok=True)
        with NotifySocket(tmp_path / "notify.sock") as systemd:
            env = {**systemd.env(watchdog_usec=400_000), "STATE_DIRECTORY": str(state)}
            run = service(broker.port, "--source", url, env=env)
            run.wait_for_line("ready in", timeout=30)
            wait_until(lambda: bool(systemd.messages), 5, "READY=1")
            # paused, nothing can hang; reconnecting, each attempt is progress: both keep the watchdog fed
            wait_until(lambda: len(systemd.pings()) >= 2, 10, "watchdog pings")
            run.process.send_signal(signal.SIGTERM)
            assert run.wait() == 0, run.log
        (tmp_path / "notify.sock").unlink()
        assert systemd.statuses() == [status]
        assert f"source {shown}," in run.log
        assert "hunter2" not in run.log + "".join(m for _t, m in systemd.messages), run.log


def test_picamera2_faults_are_outages_and_a_capture_thread_that_ends_anyway_is_exit_1(
    broker: Broker, service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    """Whatever the camera raises (a ValueError is not in picamera2's contract, nor a close() that fails)
    is an outage the reader rides out; if its thread ever ends (an exception no reader catches, such as
    SystemExit), the service must not end as a clip does, with exit 0 that systemd would not restart."""
    faults = {"fail_after": (20, ValueError("buffer too small")), "close_raises": True}
    run = service(broker.port, "--source", "picamera2", env=standin_env(tmp_path, **faults))
    run.wait_for_line("capturing again", timeout=30)
    assert run.process.poll() is None, run.log
    run.process.send_signal(signal.SIGTERM)
    assert run.wait() == 0, run.log
    assert "WARNING picamera2: ValueError: buffer too small; reconnecting" in run.log
    closing = "WARNING picamera2: cannot close (RuntimeError: Failed to release camera)"
    assert len([line for line in run.lines if closing in line]) in (2, 3), "at the outage's lines, and at the stop"
    assert "Traceback" not in run.log
    ended = service(broker.port, "--source", "picamera2", env=standin_env(tmp_path, fail_after=(20, SystemExit(3))))
    assert ended.wait() == 1, ended.log
    assert len(error_lines(ended)) == 1, ended.log
    assert re.search(r"ERROR picamera2: capture ended unexpectedly after \d+ frames$", error_lines(ended)[0])


def test_notify_helpers_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")  # another process's watchdog
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    assert watchdog_interval() == 15.0


def test_the_watchdog_is_pinged_at_most_once_per_interval_on_an_abstract_socket_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop calls ping() on every pass; systemd gets a ping per half WATCHDOG_USEC, not per pass."""
    with NotifySocket(tmp_path / "notify.sock") as systemd:
        for key, value in systemd.env(watchdog_usec=400_000).items():
            monkeypatch.setenv(key, value)
        watchdog = Watchdog()
        started = time.monotonic()
        while time.monotonic() - started < 1.0:  # a loop far faster than the interval (0.2 s)
            watchdog.ping()
            time.sleep(0.001)
        wait_until(lambda: len(systemd.pings()) >= 3, 5, "the pings")
        time.sleep(0.1)
        # at 0, 0.2 … 1.0 s: 6 at most; a loaded machine's late passes may push the later ones out
        assert 3 <= len(systemd.pings()) <= 6, systemd.pings()
    # systemd may name an abstract socket, "@" for the leading NUL byte of its address
    name = f"emotion-edge-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as abstract:
        abstract.bind("\0" + name)
        abstract.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("READY=1", "STATUS=watching")
        assert abstract.recv(4096) == b"READY=1\nSTATUS=watching"


def test_the_runtime_never_imports_tensorflow() -> None:
    code = (
        "import sys, edge.cli, edge.service, edge.mqtt.publisher, edge.mqtt.discovery, edge.pipeline\n"
        "from edge.config import Config\n"
        "edge.pipeline.Pipeline.from_config(Config())\n"  # loads the interpreter too
        "assert 'tensorflow' not in sys.modules, sorted(m for m in sys.modules if 'tensorflow' in m)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_state_summary_takes_the_emotion_most_faces_show() -> None:
    class T:
        def __init__(self, emotion: str, confidence: float) -> None:
            self.emotion, self.confidence = emotion, confidence
            self.scores = {label: 0.0 for label in EMOTIONS} | {emotion: confidence}

    assert payloads.summarize([], EMOTIONS) == ("none", 0.0, dict.fromkeys(EMOTIONS, 0.0))
    emotion, confidence, scores = payloads.summarize([T("happy", 0.6), T("sad", 0.9), T("happy", 0.8)], EMOTIONS)
    assert (emotion, round(confidence, 3)) == ("happy", 0.7)
    assert round(scores["happy"], 3) == round(1.4 / 3, 3) and round(scores["sad"], 3) == 0.3
    assert payloads.summarize([T("sad", 0.9), T("happy", 0.6)], EMOTIONS)[0] == "sad", "ties go to confidence"
    assert payloads.summarize([T("happy", 0.6), T("sad", 0.9)], EMOTIONS)[0] == "sad", "whichever face comes first"
