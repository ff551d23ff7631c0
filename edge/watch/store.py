"""The watcher's database: every event a fleet published, once, in one SQLite file.

SQLite because it is in the standard library, is one file to copy or back up, and takes far more
inserts per second than a fleet of Pis produces (see docs/watch.md for the measured rate). WAL lets
``report`` read while ``watch`` writes, and several watchers on one host share the file.

An event is stored once however often it arrives (a QoS 1 redelivery, a device's outbox replaying
after a reconnect, two watchers outside a shared group): keyed by ``(device, run, seq)`` when the
event has them, else by a hash of its content. The message is kept whole (``payload``) beside the
columns queries need, so fields added to the schema later are not lost.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1  # PRAGMA user_version: bump with a migration when the tables change
REJECT_KEPT = 4096  # bytes of a rejected message kept in ``rejects``
# Rows no device makes, which the watcher refuses and reads skip (databases filled before it checked them):
MAX_DURATION = 366 * 86400  # seconds a face has been tracked; a track lives only while the service runs
TS_AHEAD = 86400  # seconds a row may be dated after its arrival (clock skew; a clock set to local time)
PLAUSIBLE = f"t <= received + {TS_AHEAD}"
POSSIBLE_DURATION = f"duration BETWEEN 0 AND {MAX_DURATION}"
TIMED = ("events", "states", "summaries")  # the tables whose rows are dated (t) and stamped on arrival

_TABLES = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    run TEXT,
    seq INTEGER,
    hash TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    t REAL NOT NULL,
    track INTEGER NOT NULL,
    emotion TEXT NOT NULL,
    confidence REAL NOT NULL,
    duration REAL NOT NULL,
    payload TEXT NOT NULL,
    received REAL NOT NULL,
    UNIQUE (device, run, seq)
);
CREATE INDEX events_t ON events (t);
CREATE INDEX events_device_t ON events (device, t);
CREATE TABLE states (
    device TEXT PRIMARY KEY,
    t REAL NOT NULL,
    payload TEXT NOT NULL,
    received REAL NOT NULL
);
CREATE TABLE summaries (
    device TEXT NOT NULL,
    t REAL NOT NULL,
    payload TEXT NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (device, t)
);
CREATE TABLE rejects (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    received REAL NOT NULL
);
"""


SQLITE_BUSY, SQLITE_LOCKED = 5, 6  # primary result codes (sqlite3 names them only from Python 3.11)


class StoreError(RuntimeError):
    """A database that cannot be used; the message names the file."""


def database_failure(exc: BaseException) -> bool:
    """Whether SQLite refused because of the database (locked, full, read-only, damaged), not the row:
    storing any other message would fail the same way."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError))


def busy(exc: BaseException) -> bool:
    """Another connection holds the database's write lock past the busy timeout: it passes."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11 on; before it, only the message says
    return code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED) if code is not None else "locked" in str(exc)


def parse_ts(text: str) -> float:
    """Seconds since the epoch from the payloads' ISO 8601 UTC time (``...Z``); a time without a zone is UTC
    too, as every time a device sends and a report shows is, whatever this machine's zone."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def content_hash(body: Mapping[str, Any]) -> str:
    """The same event serialised by any publisher gets the same hash: keys sorted, no spaces."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class StoredEvent:
    """One row of ``events`` as the report reads it."""

    device: str
    run: str | None
    type: str
    t: float
    track: int
    emotion: str
    duration: float
    scores: dict[str, float]


class Store:
    """One open database; ``add_*`` return whether the row was new."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        try:
            if readonly:
                if not self.path.is_file():
                    raise StoreError(f"{self.path}: no such database")
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10, isolation_level=None)
            else:
                # Autocommit: each insert is its own transaction, committed before paho acknowledges
                # the message, so what the broker considers delivered is on disk.
                self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            self._check_schema(readonly)  # before anything is changed: another program's database stays as it is
            if not readonly:
                self.db.execute("PRAGMA journal_mode=WAL")
                # FULL: each commit fsynced, as the broker deletes what is acknowledged (NORMAL would make
                # a WAL commit durable only at the next checkpoint, so a power cut could lose the last ones)
                self.db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot use database ({exc})") from None

    def _check_schema(self, readonly: bool) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and not readonly:
            self.db.execute("BEGIN IMMEDIATE")  # two watchers starting together: one creates, one waits
            try:
                if self.db.execute("PRAGMA user_version").fetchone()[0] == 0:
                    tables = [row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                    if tables:
                        raise StoreError(f"{self.path}: not a database of emotion-edge watch (it holds tables "
                                         f"{', '.join(sorted(tables)[:5])})")  # fmt: skip
                    for statement in filter(str.strip, _TABLES.split(";")):
                        self.db.execute(statement)
                    self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self.db.execute("COMMIT")
            except (sqlite3.Error, StoreError):
                self.db.execute("ROLLBACK")
                raise
            version = SCHEMA_VERSION
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: database schema version {version}, this emotion-edge reads {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        self.db.close()

    def add_event(self, body: Mapping[str, Any], received: float) -> bool:
        run, seq = body.get("run"), body.get("seq")
        keyed = isinstance(run, str) and isinstance(seq, int)
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO events (device, run, seq, hash, type, t, track, emotion, confidence,"
            " duration, payload, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                body["device"],
                run if keyed else None,
                seq if keyed else None,
                content_hash(body),
                body["type"],
                parse_ts(body["ts"]),
                body["track"],
                body["emotion"],
                body["confidence"],
                body["duration"],
                json.dumps(body, separators=(",", ":")),
                received,
            ),
        )
        return cursor.rowcount == 1

    def add_state(self, body: Mapping[str, Any], received: float) -> bool:
        """The latest state per device (retained on the broker, so history is the events' job)."""
        t = parse_ts(body["ts"])
        cursor = self.db.execute(
            "INSERT INTO states (device, t, payload, received) VALUES (?, ?, ?, ?) ON CONFLICT (device)"
            " DO UPDATE SET t = excluded.t, payload = excluded.payload, received = excluded.received"
            " WHERE excluded.t > states.t",
            (body["device"], t, json.dumps(body, separators=(",", ":")), received),
        )
        return cursor.rowcount == 1

    def add_summary(self, body: Mapping[str, Any], received: float) -> bool:
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO summaries (device, t, payload, received) VALUES (?, ?, ?, ?)",
            (body["device"], parse_ts(body["ts"]), json.dumps(body, separators=(",", ":")), received),
        )
        return cursor.rowcount == 1

    def add_reject(self, topic: str, payload: bytes, reason: str, received: float) -> None:
        """Kept, not dropped: whoever debugs the device can read what it actually sent, or its first
        REJECT_KEPT bytes (a broker takes messages of up to 256 MB), its size then noted in the reason."""
        if len(payload) > REJECT_KEPT:
            reason = f"{reason}; payload of {len(payload)} bytes, its first {REJECT_KEPT} kept"
        self.db.execute(
            "INSERT INTO rejects (topic, payload, reason, received) VALUES (?, ?, ?, ?)",
            (topic, payload[:REJECT_KEPT], reason, received),
        )

    def events(self, *, since: float | None = None, device: str | None = None) -> Iterator[StoredEvent]:
        """Events in time order (ties: arrival order), optionally from ``since`` and one device."""
        where: list[str] = [PLAUSIBLE, POSSIBLE_DURATION]
        params: list[float | str] = []
        if since is not None:
            where.append("t >= ?")
            params.append(since)
        if device is not None:
            where.append("device = ?")
            params.append(device)
        sql = "SELECT device, run, type, t, track, emotion, duration, payload FROM events"
        sql += f" WHERE {' AND '.join(where)}"
        for device_, run, kind, t, track, emotion, duration, payload in self.db.execute(
            sql + " ORDER BY t, id", params
        ):
            scores = json.loads(payload).get("scores", {})
            yield StoredEvent(device_, run, kind, t, track, emotion, duration, scores)

    def last_seen(self) -> dict[str, float]:
        """Per device, the latest time anything was heard from it: where a visit with no end yet is cut."""
        rows: Iterable[tuple[str, float]] = self.db.execute(
            "SELECT device, max(t) FROM ("
            + " UNION ALL ".join(f"SELECT device, t FROM {table} WHERE {PLAUSIBLE}" for table in TIMED)
            + ") GROUP BY device"
        )
        return dict(rows)

    def implausible(self) -> int:
        """Rows the reads skip: dated far after they arrived, or with an impossible duration."""
        bad = f"NOT ({PLAUSIBLE})"
        counts = [f"(SELECT count(*) FROM events WHERE {bad} OR NOT {POSSIBLE_DURATION})"]
        counts += [f"(SELECT count(*) FROM {table} WHERE {bad})" for table in TIMED[1:]]
        return self.db.execute(f"SELECT {' + '.join(counts)}").fetchone()[0]

    def count(self, table: str) -> int:
        if table not in ("events", "states", "summaries", "rejects"):
            raise ValueError(table)
        return self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
