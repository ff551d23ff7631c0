"""sd_notify for ``Type=notify`` units, with the standard library only.

READY=1 tells systemd the service is up (so units ordered after it wait for a working pipeline, not
a started process); WATCHDOG=1 pings let systemd restart a service whose main loop has hung, which a
camera driver or a stuck interpreter can cause. Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def under_journald() -> bool:
    """True when stderr goes to the journal, which stamps each line itself (no timestamps needed)."""
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


def notify(*assignments: str) -> bool:
    """Send e.g. ``notify("READY=1", "STATUS=running")``; False when not under systemd or it failed."""
    address = os.environ.get(NOTIFY_SOCKET)
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall("\n".join(assignments).encode())
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC, as sd_watchdog_enabled advises); None when off."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6 if int(usec) > 0 else None
    except ValueError:
        return None


class Watchdog:
    """Pings at most once per interval, so the main loop can call ``ping()`` every frame."""

    def __init__(self) -> None:
        self.interval = watchdog_interval()
        self._next = 0.0

    def ping(self) -> None:
        if self.interval is None:
            return
        now = time.monotonic()
        if now >= self._next:
            notify("WATCHDOG=1")
            self._next = now + self.interval
