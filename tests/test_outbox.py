"""The outbox's journal on a real SQLite file: what survives a restart, what the bounds drop, and
that an event the broker acknowledges before the next sync never costs a write."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest

from edge.mqtt.outbox import Outbox


def outbox(path: Path | None, **bounds: float) -> Outbox:
    settings = {"max_events": 100, "max_age": 3600.0, "sync_interval": 0.1} | bounds
    return Outbox(path, **settings)  # type: ignore[arg-type]


def drain(box: Outbox) -> list[str]:
    payloads = []
    while (entry := box.take()) is not None:
        payloads.append(entry.payload)
    return payloads


def test_unacknowledged_events_survive_a_restart_in_order_and_acknowledged_ones_leave(tmp_path: Path) -> None:
    journal = tmp_path / "state" / "outbox.db"
    first = outbox(journal)
    for n in range(5):
        first.append("t/events", f"e{n}", 1)
    first.sync()
    acked = first.take()
    assert acked is not None and acked.payload == "e0"
    first.acked(acked.id)
    first.close()  # writes the rest and forgets e0
    with sqlite3.connect(journal) as db:
        assert [row[0] for row in db.execute("SELECT payload FROM outbox ORDER BY id")] == ["e1", "e2", "e3", "e4"]

    second = outbox(journal)
    second.append("t/events", "new", 1)
    assert drain(second) == ["e1", "e2", "e3", "e4", "new"], "the last run's events go first"
    second.rewind()  # a lost connection: everything unacknowledged is sent again, from the oldest
    assert drain(second) == ["e1", "e2", "e3", "e4", "new"]
    second.close()


def test_an_event_acknowledged_before_the_sync_is_never_written(tmp_path: Path) -> None:
    """With the broker there, the SD card sees nothing: the journal only takes what is still waiting."""
    journal = tmp_path / "outbox.db"
    box = outbox(journal)
    box.sync()
    wal = journal.with_name("outbox.db-wal")
    before = wal.stat().st_size if wal.exists() else 0
    for n in range(50):
        box.append("t/events", f"e{n}", 1)
        entry = box.take()
        assert entry is not None
        box.acked(entry.id)
        box.sync()
    assert (wal.stat().st_size if wal.exists() else 0) == before
    box.append("t/events", "waiting", 1)
    time.sleep(box.sync_interval / 10)  # past the grace an acknowledgement gets
    box.sync()
    assert wal.stat().st_size > before, "an unacknowledged event is written at the sync"
    box.close()


def test_a_sync_leaves_events_younger_than_a_tenth_of_the_interval_for_the_next_one(tmp_path: Path) -> None:
    """A broker over Wi-Fi acknowledges in tens of milliseconds: an event just handed over is not
    written yet, and the next sync, nine tenths of the interval later, writes it if it must."""
    journal = tmp_path / "outbox.db"
    box = outbox(journal, sync_interval=1.0)
    box.append("t/events", "young", 1)
    box.sync()
    rows = lambda: sqlite3.connect(journal).execute("SELECT payload FROM outbox").fetchall()  # noqa: E731
    assert rows() == []
    time.sleep(0.1)
    box.sync()
    assert rows() == [("young",)]
    box.close()


def test_the_count_bound_drops_the_oldest_counts_them_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = outbox(tmp_path / "outbox.db", max_events=3)
    with caplog.at_level(logging.WARNING):
        for n in range(10):
            box.append("t/events", f"e{n}", 1)
    assert (box.depth, box.dropped) == (3, 7)
    assert drain(box) == ["e7", "e8", "e9"]
    assert caplog.text.count("dropping the oldest events") == 1
    box.close()


def test_the_age_bound_drops_what_waited_too_long_even_across_a_restart(tmp_path: Path) -> None:
    journal = tmp_path / "outbox.db"
    box = outbox(journal, max_age=0.3)
    box.append("t/events", "old", 1)
    box.close()
    time.sleep(0.4)
    again = outbox(journal, max_age=0.3)
    again.append("t/events", "fresh", 1)
    assert drain(again) == ["fresh"]
    assert again.dropped == 1
    again.close()
    with sqlite3.connect(journal) as db:
        assert [row[0] for row in db.execute("SELECT payload FROM outbox")] == ["fresh"]


@pytest.mark.parametrize("journal", [False, True], ids=["memory only", "journal"])
def test_the_age_bound_holds_while_running_without_waiting_for_a_restart_or_a_sync(
    tmp_path: Path, journal: bool
) -> None:
    """A long outage of a running service: what waited longer than mqtt.outbox_max_age is not sent when
    the broker is back, with or without a journal (memory only: outside systemd, or an unwritable one)."""
    box = outbox(tmp_path / "outbox.db" if journal else None, max_age=1.0, sync_interval=60.0)
    box.start()
    box.append("t/events", "old", 1)
    time.sleep(1.2)  # "fresh" has a second to be sent in, however slow the machine
    box.append("t/events", "fresh", 1)
    assert drain(box) == ["fresh"]
    assert box.dropped == 1
    box.close()


def test_without_a_file_the_outbox_is_memory_only(tmp_path: Path) -> None:
    box = outbox(None)
    box.append("t/events", "e0", 1)
    box.start()
    box.close()
    assert drain(box) == ["e0"] and list(tmp_path.iterdir()) == []


def test_an_unreadable_journal_is_moved_aside_and_a_new_one_keeps_the_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = tmp_path / "outbox.db"
    journal.write_text("garbage, not SQLite")  # a file mangled by a bad SD card, or put there by hand
    box = outbox(journal)
    box.append("t/events", "e0", 1)
    box.start()
    assert box.close()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("outbox.db.unreadable-")]
    assert len(aside) == 1 and aside[0].read_text() == "garbage, not SQLite"
    assert [m for m in caplog.messages if "unreadable" in m] == [
        f"MQTT outbox {journal}: unreadable (file is not a database); moved to {aside[0].name}, starting a new one"
    ]
    assert drain(outbox(journal)) == ["e0"]


def test_without_a_writable_journal_close_says_the_events_are_not_on_disk(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the state folder should be")
    box = outbox(tmp_path / "state" / "outbox.db")
    box.append("t/events", "e0", 1)
    assert not box.close()
    assert outbox(None).close() is False


def test_an_overflow_after_the_outbox_emptied_is_a_new_episode_and_said_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = outbox(tmp_path / "outbox.db", max_events=2)
    with caplog.at_level(logging.WARNING):
        for n in range(4):
            box.append("t/events", f"a{n}", 1)
        while (entry := box.take()) is not None:  # the broker is back and takes everything
            box.acked(entry.id)
        assert box.depth == 0
        for n in range(4):
            box.append("t/events", f"b{n}", 1)
    assert box.dropped == 4
    assert caplog.text.count("dropping the oldest events") == 2, "one line per overflow, and this is the second"
    box.close()


def test_a_journal_holding_more_than_a_smaller_queue_size_keeps_only_the_newest_at_the_next_start(
    tmp_path: Path,
) -> None:
    """mqtt.queue_size lowered between two runs: the bound holds from the start, the oldest go."""
    journal = tmp_path / "outbox.db"
    first = outbox(journal)
    for n in range(5):
        first.append("t/events", f"e{n}", 1)
    assert first.close()
    second = outbox(journal, max_events=3)
    assert (second.depth, second.dropped) == (3, 2)
    assert drain(second) == ["e2", "e3", "e4"]
    second.close()
    with sqlite3.connect(journal) as db:
        assert [row[0] for row in db.execute("SELECT payload FROM outbox ORDER BY id")] == ["e2", "e3", "e4"]


def test_events_a_failed_sync_could_not_write_are_written_by_the_next_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A write SQLite refuses (here a trigger standing in for a full disk) rolls back: the events wait in
    memory and go into the journal at the next sync that can write, in order."""
    caplog.set_level(logging.INFO)
    journal = tmp_path / "outbox.db"
    box = outbox(journal)
    with sqlite3.connect(journal) as db:
        db.execute("CREATE TRIGGER full BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    box.append("t/events", "e0", 1)
    box.append("t/events", "e1", 1)
    time.sleep(box.sync_interval / 10)  # past the grace
    assert not box.sync()
    assert f"MQTT outbox {journal}: cannot write (disk full); events kept in memory meanwhile" in caplog.messages
    with sqlite3.connect(journal) as db:
        db.execute("DROP TRIGGER full")
    box.append("t/events", "e2", 1)
    assert box.close(), "the last write went through"
    assert f"MQTT outbox {journal}: writing again" in caplog.messages
    assert drain(outbox(journal)) == ["e0", "e1", "e2"]
