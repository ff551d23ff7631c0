"""The outbox: every event on its way to the broker, kept until the broker has acknowledged it.

The service, not paho, is the sender of record. An event enters the outbox before it is handed to
MQTT and leaves it only on the broker's PUBACK (QoS 1), so a broker that is down, a Wi-Fi link that
froze with messages in flight, or a stop during an outage loses nothing: whatever is unacknowledged
is sent again, oldest first, after the next (re)connection or the next start.

The journal is SQLite in WAL mode in the StateDirectory. It is written by one background thread
with what is still unacknowledged, leaving the events younger than a tenth of ``sync_interval`` for
the next sync, nine tenths of it later: with the broker up an event is acknowledged within
milliseconds (tens over Wi-Fi) and never reaches the SD card, and no event waits unwritten longer
than ``sync_interval``. During an outage each sync is one transaction (inserts of the new events,
deletes of the acknowledged ones) committed with ``synchronous=FULL``, one fsync, so a power cut
at any instant loses at most the events of the last ``sync_interval`` and leaves the journal as of
the last commit. (``synchronous=NORMAL`` would
save that fsync but makes a WAL commit durable only at the next checkpoint, which breaks the bound.)

Bounded by count and age: beyond ``max_events`` the oldest go, older than ``max_age`` seconds they
go; both count in ``dropped`` and are logged once per episode (until the outbox empties again).

A journal SQLite cannot read (not a database, or damaged) is moved aside, not deleted, and a new one
started: the service keeps its durability, and whatever the old file still holds stays there for
``sqlite3 .recover``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    qos INTEGER NOT NULL
)
"""


@dataclass
class Entry:
    id: int
    created: float  # wall clock, for the age bound across restarts
    topic: str
    payload: str
    qos: int
    on_disk: bool = False  # written by a sync (or scheduled to be): its ack must delete the row
    queued: float = 0.0  # time.monotonic() at append, for the sync's grace (immune to clock changes)


class Outbox:
    """Events in order, unacknowledged ones survive a restart when ``path`` is set (memory only when None).

    Thread use: ``append`` from the service's loop, ``take``/``acked``/``rewind`` from the publisher's
    sender and paho's thread, ``sync`` from the outbox's own thread; one lock guards the in-memory
    state, and the disk is written outside it so an fsync never holds up a callback.
    """

    def __init__(self, path: Path | None, *, max_events: int, max_age: float, sync_interval: float) -> None:
        self.path = path
        self.max_events = max_events
        self.max_age = max_age
        self.sync_interval = sync_interval
        self._grace = sync_interval / 10  # an acknowledgement this young is worth waiting for
        self.dropped = 0
        self._lock = threading.Lock()
        self._entries: dict[int, Entry] = {}  # unacknowledged, oldest first
        self._unsent: deque[int] = deque()  # ids to hand to MQTT next; stale ids are skipped lazily
        self._unwritten: list[int] = []  # ids appended since the last sync; stale ids are skipped
        self._to_delete: set[int] = set()
        self._next_id = 1
        self._dropping = False
        self._disk_failed = False
        self._db: sqlite3.Connection | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        if path is not None:
            self._open(path)

    @property
    def depth(self) -> int:
        with self._lock:
            return len(self._entries)

    def start(self) -> None:
        """Begin the periodic sync (nothing to do without a journal)."""
        if self._db is not None and self._thread is None:
            self._thread = threading.Thread(target=self._sync_loop, name="outbox sync", daemon=True)
            self._thread.start()

    def append(self, topic: str, payload: str, qos: int) -> None:
        with self._lock:
            if len(self._entries) >= self.max_events:
                self._drop(next(iter(self._entries)), f"full ({self.max_events} events, mqtt.queue_size)")
            entry = Entry(self._next_id, time.time(), topic, payload, qos, queued=time.monotonic())
            self._next_id += 1
            self._entries[entry.id] = entry
            self._unsent.append(entry.id)
            self._unwritten.append(entry.id)

    def take(self) -> Entry | None:
        """The oldest event not yet handed to MQTT on this connection, or None; none older than ``max_age``
        (the sync expires them too, but only with a journal, and only every ``sync_interval``)."""
        with self._lock:
            self._expire(time.time())
            while self._unsent:
                entry = self._entries.get(self._unsent.popleft())
                if entry is not None:
                    return entry
            return None

    def acked(self, entry_id: int) -> None:
        """The broker has the event: it leaves the outbox (and the journal at the next sync)."""
        with self._lock:
            entry = self._entries.pop(entry_id, None)
            if entry is not None and entry.on_disk:
                self._to_delete.add(entry_id)
            if not self._entries:
                self._dropping = False  # the next overflow is a new episode, worth a new line

    def rewind(self) -> None:
        """The connection is gone: what was in flight is sent again, from the oldest unacknowledged on."""
        with self._lock:
            self._unsent = deque(self._entries)

    def sync(self, *, everything: bool = False) -> bool:
        """Write what is unacknowledged (but younger than the grace, unless ``everything``) and forget
        what was acknowledged, in one transaction; False when there is no journal or it failed."""
        if self._db is None:
            return False
        with self._lock:
            self._expire(time.time())
            pending = [e for i in self._unwritten if (e := self._entries.get(i)) is not None]
            cutoff = float("inf") if everything else time.monotonic() - self._grace
            new = [e for e in pending if e.queued <= cutoff]  # in order of append, so a prefix
            self._unwritten = [e.id for e in pending[len(new) :]]
            for entry in new:
                entry.on_disk = True
            gone, self._to_delete = self._to_delete, set()
        if not new and not gone:
            return True
        try:
            with self._db:  # one transaction: commits (one fsync) or rolls back as a whole
                self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in gone])
                self._db.executemany(
                    "INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?, ?)",
                    [(e.id, e.created, e.topic, e.payload, e.qos) for e in new],
                )
        except sqlite3.Error as exc:
            with self._lock:
                for entry in new:
                    entry.on_disk = False
                self._unwritten[:0] = [e.id for e in new]  # first at the next attempt, still in order
                self._to_delete |= gone
            if self._disk_failed:  # one line per episode, whatever SQLite calls it this time
                log.debug("MQTT outbox %s: the journal is still not writable (%s)", self.path, exc)
            else:
                log.error("MQTT outbox %s: cannot write (%s); events kept in memory meanwhile", self.path, exc)
                self._disk_failed = True
            return False
        if self._disk_failed:
            log.info("MQTT outbox %s: writing again", self.path)
            self._disk_failed = False
        return True

    def close(self) -> bool:
        """Stop the sync thread and write what is still unacknowledged, for the next start; whether it
        is on disk (False without a journal, or when the last write failed)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(2 * self.sync_interval + 1)
        if self._db is None:
            return False
        written = self.sync(everything=True)
        self._db.close()
        self._db = None
        return written

    def _sync_loop(self) -> None:
        while not self._stopping.wait(self.sync_interval - self._grace):
            self.sync()

    def _open(self, path: Path) -> None:
        try:
            try:
                db, rows = _connect(path)
            except sqlite3.DatabaseError as exc:
                # the base class itself is SQLite's "file is not a database" and "disk image is malformed";
                # its subclasses (cannot open, read-only, I/O error, disk full) are not the file's fault
                if type(exc) is not sqlite3.DatabaseError:
                    raise
                aside = _set_aside(path)
                log.error("MQTT outbox %s: unreadable (%s); moved to %s, starting a new one", path, exc, aside.name)
                db, rows = _connect(path)
        except (sqlite3.Error, OSError) as exc:
            log.error("MQTT outbox %s: cannot open (%s); events kept in memory only", path, exc)
            return
        self._db = db
        for entry_id, created, topic, payload, qos in rows:
            entry = Entry(entry_id, created, topic, payload, qos, on_disk=True)
            self._entries[entry.id] = entry
            self._unsent.append(entry.id)
        self._next_id = rows[-1][0] + 1 if rows else 1
        with self._lock:
            self._expire(time.time())
            while len(self._entries) > self.max_events:
                self._drop(next(iter(self._entries)), f"full ({self.max_events} events, mqtt.queue_size)")
        if self._entries:
            log.info("MQTT outbox %s: %d events from before the restart go first", path, len(self._entries))

    def _expire(self, now: float) -> None:
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if now - oldest.created <= self.max_age:
                return
            self._drop(oldest.id, f"events older than {self.max_age:g} s (mqtt.outbox_max_age)")

    def _drop(self, entry_id: int, why: str) -> None:
        entry = self._entries.pop(entry_id)
        if entry.on_disk:
            self._to_delete.add(entry_id)
        self.dropped += 1
        if not self._dropping:
            log.warning("MQTT outbox: dropping the oldest events, %s; counted in stats events_dropped", why)
            self._dropping = True


def _connect(path: Path) -> tuple[sqlite3.Connection, list[tuple]]:
    """The journal at ``path``, set up for durable syncs, and the rows it holds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA page_size=1024")  # small rows, small pages: fewer bytes per sync (docs/reliability.md)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA journal_size_limit=1048576")  # the WAL shrinks back after a checkpoint
        db.execute("PRAGMA synchronous=FULL")
        db.execute(SCHEMA)
        rows = db.execute("SELECT id, created, topic, payload, qos FROM outbox ORDER BY id").fetchall()
    except BaseException:
        db.close()
        raise
    db.isolation_level = "DEFERRED"  # from here on, `with db:` is one transaction per sync
    return db, rows


def _set_aside(path: Path) -> Path:
    """Rename the journal (and its WAL files) to a free ``<name>.unreadable-<time>[-n]``; the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.unreadable-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.unreadable-{stamp}-{n}")
    for part in ("", "-wal", "-shm"):
        if Path(f"{path}{part}").exists():
            Path(f"{path}{part}").rename(f"{aside}{part}")
    return aside
