"""``emotion-edge report`` on the committed fleet database and on the demo clip's analysis: the page and
the PNG carry the numbers counted by hand from the events (fleet) or from the JSON lines (clip)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections import Counter
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import REPO, edge_command
from PIL import Image

from edge import report
from edge.mqtt import payloads
from edge.tools.demo import DEMO_CLIP
from edge.vision.emotions import EMOTIONS
from edge.watch.store import Store
from edge.watch.watcher import parse, store_message

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "watch"
FLEET_DB = FIXTURES / "fleet.db"

# Counted by hand from fleet.jsonl (T = 10:00Z on 2026-09-21):
#   hall track 1: start at T+60 s with duration 0.5, so from T+59.5 neutral; happy from T+100; end T+160
#                 -> neutral 40.5 s, happy 60 s
#   hall track 2: sad from T+3590 to its end at T+3660 -> sad 70 s (10 s before 11:00, 60 s after)
#   lab track 1:  surprise from T+200, happy from T+220, no end: cut at lab's last state, T+260
#                 -> surprise 20 s, happy 40 s
HALL = {"neutral": 40.5, "happy": 60.0, "sad": 70.0}
LAB = {"surprise": 20.0, "happy": 40.0}
OVERALL = {"neutral": 40.5, "happy": 100.0, "sad": 70.0, "surprise": 20.0}
HOUR_10 = {"neutral": 40.5, "happy": 100.0, "sad": 10.0, "surprise": 20.0}
HOUR_11 = {"sad": 60.0}
T = datetime(2026, 9, 21, 10, tzinfo=timezone.utc).timestamp()


def share(seconds: dict[str, float], label: str) -> float:
    return round(seconds.get(label, 0.0) / sum(seconds.values()), 4)


def page_data(path: Path) -> dict:
    text = path.read_text()
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    assert match, "the page embeds its numbers"
    return json.loads(match.group(1).replace("<\\/", "</"))


def page_rows(path: Path) -> list[tuple[str, str, list[str]]]:
    """The visible numbers table's rows: (tbody or tfoot, row name, its cells' text)."""
    table = re.search(r'<table id="numbers">.*?</table>', path.read_text(), re.S)
    assert table, "the page has the numbers table"
    rows = []
    for section, inside in re.findall(r"<(tbody|tfoot)>(.*?)</\1>", table.group(0), re.S):
        for row in re.findall(r"<tr.*?</tr>", inside, re.S):
            name = re.search(r'data-name="([^"]+)"', row)
            assert name, row
            rows.append((section, name.group(1), re.findall(r"<td[^>]*>([^<]*)</td>", row)))
    return rows


def page_cells(path: Path) -> dict[str, list[str]]:
    """The visible numbers table: row name -> its cells' text."""
    return {name: cells for _, name, cells in page_rows(path)}


def run_report(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(edge_command("report", *args), env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def test_fixture_database_holds_exactly_the_fixture_events(tmp_path):
    """fleet.db is fleet.jsonl through the watcher's parse and store (the redelivered change once)."""
    lines = [json.loads(line) for line in (FIXTURES / "fleet.jsonl").read_text().splitlines()]
    sent = [parse(m["topic"], json.dumps(m["payload"]).encode(), T) for m in lines]
    unique_events = {json.dumps(body, sort_keys=True) for leaf, body in sent if leaf == "events"}
    store = Store(FLEET_DB, readonly=True)
    stored = {json.dumps(json.loads(p), sort_keys=True) for (p,) in store.db.execute("SELECT payload FROM events")}
    assert stored == unique_events and len(stored) == 7
    store.close()


def test_report_by_device_from_the_fixture_database_as_page_and_png(edge_env, tmp_path):
    run_report("--db", str(FLEET_DB), "-o", str(tmp_path / "fleet.html"), env=edge_env)
    run_report("--db", str(FLEET_DB), "-o", str(tmp_path / "fleet.png"), env=edge_env)
    data = page_data(tmp_path / "fleet.html")
    labels = data["labels"]
    assert labels == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    rows = {row["name"]: row for row in data["table"]}
    assert list(rows) == ["hall", "lab", "overall"]
    for name, seconds, visits, top in (
        ("hall", HALL, 2, "sad"),
        ("lab", LAB, 1, "happy"),
        ("overall", OVERALL, 3, "happy"),
    ):
        assert rows[name]["visits"] == visits
        assert rows[name]["face_seconds"] == pytest.approx(sum(seconds.values()))
        assert rows[name]["predominant"] == top
        assert rows[name]["share"] == {label: share(seconds, label) for label in labels}
    cells = page_cells(tmp_path / "fleet.html")
    assert cells["overall"][:3] == ["3", "230.5", "happy"]
    assert cells["overall"][3 + labels.index("happy")] == f"{100 / 230.5:.1%}"  # 43.4%
    assert [(v["group"], v["track"], v["predominant"]) for v in data["visits"]] == [
        ("hall", 1, "happy"),
        ("lab", 1, "happy"),
        ("hall", 2, "sad"),
    ]
    png = Image.open(tmp_path / "fleet.png")
    assert png.format == "PNG" and png.size[0] >= 1000
    assert json.loads(png.text["Description"]) == data["table"]  # the PNG carries the same numbers


def test_report_by_hour_since_and_device(edge_env, tmp_path):
    run_report("--db", str(FLEET_DB), "--group-by", "hour", "-o", str(tmp_path / "hours.html"), env=edge_env)
    rows = {row["name"]: row for row in page_data(tmp_path / "hours.html")["table"]}
    assert list(rows) == ["2026-09-21 10:00Z", "2026-09-21 11:00Z", "overall"]
    assert rows["2026-09-21 10:00Z"]["face_seconds"] == pytest.approx(170.5)
    assert rows["2026-09-21 10:00Z"]["share"]["sad"] == share(HOUR_10, "sad")
    assert (rows["2026-09-21 11:00Z"]["visits"], rows["2026-09-21 11:00Z"]["share"]["sad"]) == (1, 1.0)
    assert rows["overall"]["face_seconds"] == pytest.approx(sum(OVERALL.values()))

    run_report("--db", str(FLEET_DB), "--device", "lab", "-o", str(tmp_path / "lab.html"), env=edge_env)
    rows = {row["name"]: row for row in page_data(tmp_path / "lab.html")["table"]}
    assert list(rows) == ["lab", "overall"] and rows["overall"]["share"]["happy"] == share(LAB, "happy")

    # from 10:30: only hall's second visit, whose start and end both come after
    run_report(
        "--db", str(FLEET_DB), "--since", "2026-09-21T10:30:00Z", "-o", str(tmp_path / "late.html"), env=edge_env
    )
    rows = {row["name"]: row for row in page_data(tmp_path / "late.html")["table"]}
    assert rows["overall"]["face_seconds"] == pytest.approx(70.0) and rows["overall"]["predominant"] == "sad"


def test_report_names_a_bad_input_in_one_line(edge_env, tmp_path):
    for args, text in (
        (["--db", str(tmp_path / "none.db")], "none.db: no such database"),
        (["--db", str(FLEET_DB), "--since", "last week"], "--since 'last week': expected a span"),
        (["--jsonl", str(FLEET_DB)], "fleet.db"),
    ):
        done = subprocess.run(edge_command("report", *args, "-o", str(tmp_path / "r.html")), env=edge_env,
                              cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 1 and text in done.stderr and "Traceback" not in done.stderr, done.stderr
    mixed = subprocess.run(edge_command("report", "--jsonl", str(FIXTURES / "fleet.jsonl"), "--since", "1h", "-o",
                                        str(tmp_path / "r.html")), env=edge_env, cwd=REPO, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert mixed.returncode == 2 and "apply to --db" in mixed.stderr
    missing = tmp_path / "missing"
    for out, reason in ((tmp_path / "r.pdf", "the name must end in .html, .htm or .png"),
                        (missing / "r.html", f"folder {missing} does not exist")):  # fmt: skip
        done = subprocess.run(edge_command("report", "--db", str(FLEET_DB), "-o", str(out)),
                              env=edge_env, cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 1 and done.stderr.strip().endswith(f"ERROR report: -o {out}: {reason}"), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_report_of_an_empty_selection_says_so_in_one_line_and_writes_the_page(edge_env, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for args, line in (
        (["--db", str(FLEET_DB), "--device", "zzz"], f"report: no events in {FLEET_DB} from device 'zzz'"),
        (
            ["--db", str(FLEET_DB), "--since", "2099-01-01"],
            f"report: no events in {FLEET_DB} since 2099-01-01T00:00:00Z",
        ),
        (["--jsonl", str(empty)], f"report: no faces in {empty}: it has no frames"),
    ):
        for out in (tmp_path / "r.html", tmp_path / "r.png"):
            out.unlink(missing_ok=True)
            done = run_report(*args, "-o", str(out), env=edge_env)
            lines = done.stderr.splitlines()
            assert len(lines) == 2 and "Warning" not in done.stderr, done.stderr  # no matplotlib UserWarning
            assert lines[0].endswith(f"WARNING {line}; the report shows 0 visits"), done.stderr
            assert lines[1].endswith(f"INFO report: {out} written"), done.stderr
            assert out.stat().st_size > 0
        assert page_data(tmp_path / "r.html")["visits"] == [] and "<p>0 visits;" in (tmp_path / "r.html").read_text()


def test_rows_stored_before_watch_checked_them_are_left_out_and_counted(edge_env, tmp_path):
    """A database filled by an older watch may hold what today's refuses: a state dated 9999 (matplotlib
    cannot draw it; it would also stretch the device's visit to then) and an event lasting 1e300 s."""
    db = tmp_path / "old.db"
    shutil.copy(FLEET_DB, db)
    store = Store(db)
    arrived = store.db.execute("SELECT max(received) FROM events").fetchone()[0]
    good = json.loads(store.db.execute("SELECT payload FROM events ORDER BY id LIMIT 1").fetchone()[0])
    store.add_state({"schema": 1, "device": "hall", "ts": "9999-12-31T23:00:00Z", "faces": 1}, arrived)
    store.add_event({**good, "run": "poisoned0001", "seq": 1, "duration": 1e300}, arrived)
    store.close()
    out = tmp_path / "r.html"
    done = run_report("--db", str(db), "-o", str(out), env=edge_env)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    warnings = [line for line in done.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and warnings[0].endswith(
        f"report: {db}: 2 rows left out, dated over a day after they arrived or with an impossible duration "
        "(stored before watch refused such messages)"
    ), done.stderr
    assert page_data(out)["visits"] == page_data_of_fleet(tmp_path, edge_env)["visits"], "the rest as before"


def page_data_of_fleet(tmp_path: Path, env: dict[str, str]) -> dict:
    out = tmp_path / "fleet.html"
    assert run_report("--db", str(FLEET_DB), "-o", str(out), env=env).returncode == 0
    return page_data(out)


def test_since_spans():
    assert report.parse_since("24h", now=100_000.0) == 100_000.0 - 86400
    assert report.parse_since("90m", now=10_000.0) == 10_000.0 - 5400
    assert report.parse_since("2026-09-21T10:00:00Z") == datetime(2026, 9, 21, 10, tzinfo=timezone.utc).timestamp()


def test_a_time_without_a_zone_is_utc_on_a_machine_in_any_zone(edge_env, tmp_path):
    for zone in ("America/New_York", "Asia/Kolkata"):
        done = subprocess.run(edge_command("report", "--db", str(FLEET_DB), "--since", "2026-09-21T10:30", "-o",
                                           str(tmp_path / "r.html")), env={**edge_env, "TZ": zone}, cwd=REPO,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert page_data(tmp_path / "r.html")["table"][-1]["face_seconds"] == 70.0, zone  # as from 10:30Z


def watched(db: Path, messages: list[tuple[str, dict]]) -> None:
    """``messages`` (device, event body) stored as ``watch`` stores them, through its schema check."""
    store = Store(db)
    received = time.time()
    store.db.execute("BEGIN")
    for device, body in messages:
        store_message(
            store, *parse(f"emotion-edge/{device}/events", payloads.encode(body).encode(), received), received
        )
    store.db.execute("COMMIT")
    store.close()


def visit(
    device: str, track: int, t0: float, seconds: float, emotion: str = "happy", scores: dict | None = None
) -> list[tuple[str, dict]]:
    """Track ``track``'s visit of ``seconds`` from ``t0``: its start and its end, as a device publishes them."""
    scores = scores or {label: float(label == emotion) for label in EMOTIONS}
    body = {"schema": 1, "device": device, "track": track, "emotion": emotion, "confidence": 1.0, "scores": scores,
            "box": [0, 0, 10, 10], "run": "r"}  # fmt: skip
    start = {**body, "type": "start", "ts": payloads.iso_utc(t0), "duration": 0.0, "seq": 2 * track - 1}
    end = {**body, "type": "end", "ts": payloads.iso_utc(t0 + seconds), "duration": seconds, "seq": 2 * track}
    return [(device, start), (device, end)]


class ReportData(HTMLParser):
    """The page's embedded JSON, found as a browser finds it: the text of <script id="report-data">."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.text = ""
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"
        self.inside = tag == "script" and ("id", "report-data") in attrs

    def handle_endtag(self, tag: str) -> None:
        self.inside = False

    def handle_data(self, data: str) -> None:
        self.text += data if self.inside else ""


def test_names_and_labels_of_any_text_are_drawn_and_embedded_as_they_are(edge_env, tmp_path):
    """A device named like mathtext, labels with ``$`` and ``<!--<script``: the figure once failed on them
    (every later report of the database did) and the embedded JSON could be cut short; now each is literal."""
    device, label = "$\\foo{$", "a$^$b</script><!--<script>&"
    now = time.time() - 600
    hall = visit("hall", 1, now, 60.0)
    odd = visit(device, 1, now, 30.0, label, {label: 1.0, "happy": 0.0})
    watched(tmp_path / "w.db", hall + odd + visit("<!--<script", 1, now, 10.0))
    for out in ("r.html", "r.png"):
        run_report("--db", str(tmp_path / "w.db"), "-o", str(tmp_path / out), env=edge_env)
    parser = ReportData()
    parser.feed((tmp_path / "r.html").read_text())
    assert parser.scripts == 1  # no <script> opened by a name
    assert "<" not in parser.text  # no "<!--" either, which sends a browser's script parsing past "</script>"
    data = json.loads(parser.text)
    assert [row["name"] for row in data["table"]] == ["$\\foo{$", "<!--<script", "hall", "overall"]
    assert label in data["labels"] and data["table"][0]["predominant"] == label
    assert json.loads(Image.open(tmp_path / "r.png").text["Description"]) == data["table"]


def test_a_flood_of_devices_labels_and_hours_is_cut_to_a_page_saying_how_much_was_left_out(edge_env, tmp_path):
    """A client can make up device names, labels and long visits that a real device would never send: the page
    shows the busiest MAX_ROWS rows, the MAX_LABELS labels most scores name and the latest visits, and says so."""
    now = time.time() - 86400
    messages = []
    for i in range(report.MAX_ROWS + 50):  # device d<i> has i + 1 visits of i + 1 seconds each
        for n in range(1, i + 2):
            messages += visit(f"d{i:03d}", n, now + n * 200, i + 1.0)
    messages += visit("junk", 1, now, 1.0, scores={f"junk{k}": 0.0 for k in range(16)})
    messages += visit("photo", 1, now - 200 * 86400, 200 * 86400)  # a photo on the wall, 200 days (4800 hours)
    watched(tmp_path / "w.db", messages)

    run_report("--db", str(tmp_path / "w.db"), "-o", str(tmp_path / "r.html"), env=edge_env)
    data = page_data(tmp_path / "r.html")
    names = [row["name"] for row in data["table"]]
    assert names == [*(f"d{i:03d}" for i in range(51, 150)), "photo", "overall"]  # the busiest 100, by name
    assert data["rows_left_out"] == 52 and data["table"][-1]["visits"] == data["visits_total"] == 11327
    assert len(data["visits"]) == report.MAX_VISITS_LISTED
    assert data["visits"][-1]["t0"] == pytest.approx(now + 150 * 200, abs=0.01), "the latest are listed"
    assert len(data["labels"]) == report.MAX_LABELS and set(EMOTIONS) <= set(data["labels"])
    page = (tmp_path / "r.html").read_text()
    assert "52 more devices with less face-time than these 100 are left out of the table" in page
    assert "<summary>The latest 1000 of 11327 visits</summary>" in page

    run_report("--db", str(tmp_path / "w.db"), "--group-by", "hour", "-o", str(tmp_path / "h.html"), env=edge_env)
    data = page_data(tmp_path / "h.html")
    assert len(data["table"]) == report.MAX_ROWS + 1 and data["rows_left_out"] > 4700


def test_the_visits_chart_has_the_busiest_devices_and_one_legend_entry_for_emotions_no_score_names(tmp_path):
    """A chart has room for MAX_VISIT_ROWS devices, the busiest; emotions without a colour of their own (made up
    by a client, one per visit) share one legend entry instead of one each."""
    from edge.report import render

    now = time.time() - 86400
    messages = []
    for i in range(render.MAX_VISIT_ROWS + 5):  # d<i>: a visit of i + 1 minutes
        messages += visit(f"d{i:02d}", 1, now, 60.0 * (i + 1))
    for k in range(30):
        messages += visit("moody", k + 1, now + 100 * k, 90.0, f"mood{k}")
    watched(tmp_path / "w.db", messages)
    fig = render.figure(report.from_databases([tmp_path / "w.db"]))
    chart = fig.axes[1]
    assert [t.get_text() for t in chart.get_yticklabels()] == sorted(["moody", *(f"d{i:02d}" for i in range(6, 45))])
    assert [t.get_text() for t in chart.get_legend().get_texts()] == ["happy", "other (30)"]


def event(device: str, kind: str, t: float, duration: float, emotion: str, **keys: object) -> tuple[str, dict]:
    """An event as a device publishes it, of track 1 unless ``keys`` say otherwise; ``keys`` also give its run
    and seq (none: a device from before them)."""
    scores = {label: float(label == emotion) for label in EMOTIONS}
    body = {"schema": 1, "device": device, "type": kind, "ts": payloads.iso_utc(t), "track": 1, "emotion": emotion,
            "confidence": 1.0, "scores": scores, "duration": duration, "box": [0, 0, 10, 10], **keys}  # fmt: skip
    return device, body


def test_a_visit_whose_end_was_lost_lasts_until_its_last_news_and_one_heard_of_midway_starts_there(tmp_path):
    """An old device (no run) restarted without its end reaching the broker uses track 1 again; a watcher
    started in the middle of a visit first hears of it at a change, whose duration reaches back before it."""
    t = float(int(time.time()) - 3600)  # whole seconds, as the payloads' times (ms) carry them
    watched(tmp_path / "w.db", [
        event("attic", "start", t, 0.0, "happy"),
        event("attic", "change", t + 10, 10.0, "sad"),  # then the device restarted: no end
        event("attic", "start", t + 100, 0.0, "neutral"),
        event("attic", "end", t + 130, 30.0, "neutral"),
        event("lab", "change", t + 50, 40.0, "surprise", run="r", seq=7),  # the visit began at t + 10, unheard
        event("lab", "end", t + 70, 60.0, "surprise", run="r", seq=8),
    ])  # fmt: skip
    visits = report.from_databases([tmp_path / "w.db"]).to_dict()["visits"]
    assert [(v["group"], v["t0"] - t, v["t1"] - t, v["seconds"]) for v in visits] == [
        ("attic", 0.0, 10.0, {"happy": 10.0}),  # until its change, its last news: not until the next start
        ("lab", 50.0, 70.0, {"surprise": 20.0}),  # from the change it was first heard of
        ("attic", 100.0, 130.0, {"neutral": 30.0}),
    ]


def test_a_visit_still_open_is_cut_at_the_last_news_of_its_device_in_any_of_the_databases(tmp_path):
    """Two watchers in a shared group split a device's events: its last news may be in either database."""
    t = float(int(time.time()) - 3600)
    watched(tmp_path / "a.db", [event("hall", "start", t, 0.0, "happy", run="r", seq=1),  # open: no end yet
                                event("hall", "start", t + 250, 0.0, "sad", run="r", seq=3, track=2),
                                event("hall", "end", t + 300, 50.0, "sad", run="r", seq=4, track=2)])  # fmt: skip
    watched(tmp_path / "b.db", [event("hall", "start", t + 205, 0.0, "fear", run="r", seq=2, track=3),
                                event("hall", "end", t + 210, 5.0, "fear", run="r", seq=5, track=3)])  # fmt: skip
    for paths in (["a.db", "b.db"], ["b.db", "a.db"]):
        data = report.from_databases([tmp_path / p for p in paths]).to_dict()
        (first,) = [v for v in data["visits"] if v["track"] == 1]
        assert first["seconds"] == {"happy": 300.0}, paths
        assert data["table"][-1]["face_seconds"] == 355.0


def test_a_visit_a_crash_left_open_ends_with_its_run_not_at_the_news_of_the_next_one(tmp_path):
    """A power cut mid-visit loses its end; the device's next run, two days later, says nothing of it."""
    t = float(int(time.time()) - 3 * 86400)
    watched(tmp_path / "w.db", [
        event("hall", "start", t, 0.0, "happy", run="r1", seq=1),
        event("hall", "change", t + 20, 20.0, "sad", run="r1", seq=2),
        event("hall", "start", t + 30, 0.0, "fear", run="r1", seq=3, track=2),  # the run's last event: the cut
        event("hall", "start", t + 2 * 86400, 0.0, "neutral", run="r2", seq=1),  # the same track number again
        event("hall", "end", t + 2 * 86400 + 5, 5.0, "neutral", run="r2", seq=2),
    ])  # fmt: skip
    data = report.from_databases([tmp_path / "w.db"]).to_dict()
    assert [(v["track"], v["t0"] - t, v["t1"] - t, v["seconds"]) for v in data["visits"]] == [
        (1, 0.0, 30.0, {"happy": 20.0, "sad": 10.0}),  # until its run's last event (track 2 heard of, no time)
        (1, 2 * 86400.0, 2 * 86400.0 + 5, {"neutral": 5.0}),
    ]
    assert data["table"][-1]["face_seconds"] == 35.0


def test_devices_named_like_the_totals_row_or_with_any_digits_get_rows_of_their_own(tmp_path):
    """ "overall" is a valid device id, and "²" a digit to str.isdigit() that int() refuses."""
    t = float(int(time.time()) - 3600)
    watched(tmp_path / "w.db", [*visit("overall", 1, t, 100.0), *visit("hall", 2, t, 50.0, "sad"),
                                *visit("cam1²", 3, t, 5.0, "fear"), *visit("cam10", 4, t, 1.0)])  # fmt: skip
    table = report.from_databases([tmp_path / "w.db"]).table()
    assert [(row["name"], row["visits"], row["face_seconds"]) for row in table] == [
        ("cam1²", 1, 5.0), ("cam10", 1, 1.0), ("hall", 1, 50.0), ("overall", 1, 100.0), ("overall", 4, 156.0),
    ]  # fmt: skip
    report.write(report.from_databases([tmp_path / "w.db"]), tmp_path / "r.html")
    assert [(section, name, cells[0]) for section, name, cells in page_rows(tmp_path / "r.html")] == [
        ("tbody", "cam1²", "1"), ("tbody", "cam10", "1"), ("tbody", "hall", "1"), ("tbody", "overall", "1"),
        ("tfoot", "overall", "4"),  # only the totals drawn as the totals
    ]  # fmt: skip


def test_report_of_a_damaged_database_says_so_in_one_line_and_one_since_before_the_epoch_takes_all(edge_env, tmp_path):
    damaged = tmp_path / "damaged.db"
    shutil.copy(FLEET_DB, damaged)
    with open(damaged, "r+b") as f:  # the header and the schema page kept, the pages of the tables overwritten
        f.seek(4096)
        f.write(b"\xff" * (damaged.stat().st_size - 4096))
    done = subprocess.run(edge_command("report", "--db", str(damaged), "-o", str(tmp_path / "r.html")), env=edge_env,
                          cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().endswith(f"ERROR report: {damaged}: cannot read database (database disk image is "
                                        "malformed)"), done.stderr  # fmt: skip
    for since in ("1000000d", "0001-01-01T00:00:00+05:00"):  # before the epoch, or before year 1 in UTC
        done = subprocess.run(edge_command("report", "--db", str(FLEET_DB), "--since", since, "-o",
                                           str(tmp_path / "r.html")), env=edge_env, cwd=REPO, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert page_data(tmp_path / "r.html")["table"][-1]["face_seconds"] == pytest.approx(sum(OVERALL.values()))


def test_report_names_the_line_of_a_frame_it_cannot_read(edge_env, tmp_path):
    good = {"frame": 0, "ts": 0.0, "faces": [{"track": 1, "emotion": "happy", "scores": {"happy": 1.0}}]}
    for bad, reason in (
        ({**good, "ts": "1"}, "ts '1' is not a number"),
        ({**good, "faces": [{**good["faces"][0], "track": "x"}]}, "track 'x' is not an integer"),
        (
            {**good, "faces": [{**good["faces"][0], "scores": {"happy": "high"}}]},
            "scores {'happy': 'high'} are not numbers by label",
        ),
        ({"ts": 1.0}, "it needs ts and faces"),
    ):
        path = tmp_path / "frames.jsonl"
        path.write_text(f"{json.dumps(good)}\n{json.dumps(bad)}\n")
        done = subprocess.run(edge_command("report", "--jsonl", str(path), "-o", str(tmp_path / "r.html")),
                              env=edge_env, cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().endswith(f"{path}:2: not an `emotion-edge analyze` frame ({reason})"), done.stderr


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-report")
    done = subprocess.run(
        edge_command("analyze", str(DEMO_CLIP), "--report", str(out / "demo.html"), "--summary", str(out / "s.json")),
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (out / "demo.jsonl").write_text(done.stdout)
    return out


def test_analyze_report_of_the_demo_clip_has_one_row_per_face_with_its_frame_shares(demo_report, edge_env):
    records = [json.loads(line) for line in (demo_report / "demo.jsonl").read_text().splitlines()]
    frames: dict[str, Counter[str]] = {}
    for record in records:
        for face in record["faces"]:
            frames.setdefault(f"track {face['track']}", Counter())[face["emotion"]] += 1
    frames["overall"] = sum(frames.values(), Counter())
    data = page_data(demo_report / "demo.html")
    rows = {row["name"]: row for row in data["table"]}
    assert list(rows) == ["track 1", "track 2", "track 3", "track 4", "overall"]
    for name, counts in frames.items():
        assert rows[name]["face_seconds"] == pytest.approx(sum(counts.values()) / 15, abs=1e-3)  # 15 fps
        assert rows[name]["share"] == {label: share(counts, label) for label in data["labels"]}
        assert rows[name]["predominant"] == counts.most_common(1)[0][0]
    summary = json.loads((demo_report / "s.json").read_text())
    assert rows["overall"]["share"] == summary["overall"]["share"]
    assert [rows[f"track {t['track']}"]["predominant"] for t in summary["per_track"]] == [
        t["predominant"] for t in summary["per_track"]
    ]

    # the same numbers from the JSON lines afterwards, as a PNG
    run_report("--jsonl", str(demo_report / "demo.jsonl"), "-o", str(demo_report / "demo.png"), env=edge_env)
    table = json.loads(Image.open(demo_report / "demo.png").text["Description"])
    assert [(r["name"], r["share"]) for r in table] == [(r["name"], r["share"]) for r in data["table"]]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (setup.sh --dev installs it)")
def test_the_page_renders_in_a_headless_browser_without_the_network(demo_report, tmp_path):
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1100,900", f"--screenshot={shot}", (demo_report / "demo.html").as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    picture = Image.open(shot).convert("RGB")
    assert picture.size == (1100, 900)
    colours = picture.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 50  # the embedded figure was drawn, not a blank page
