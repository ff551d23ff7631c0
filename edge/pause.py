"""What the service reads from while it is paused: nothing.

Pausing (``OFF`` on ``…/enabled/set``, edge.mqtt.commands) must release the camera, not merely stop
looking at it: a household that switches it off for privacy expects the device closed and its LED
dark. So the service closes its LatestFrameReader and reads from a PausedReader instead until it is
switched on again, which opens the source anew; a device started paused never opens the camera.
"""

from __future__ import annotations

import time

PAUSED = "paused"


class PausedReader:
    """Looks like a LatestFrameReader that never delivers a frame and never ends."""

    live = True
    ended = False
    state = PAUSED
    fps = 0.0
    dropped = 0
    capture_ms = 0.0
    reconnects = 0

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def progress(self) -> float:
        """Always now: with no camera open there is nothing that could hang, so the watchdog is pinged."""
        return time.monotonic()

    def read(self, timeout: float | None = None) -> None:
        """Waits as a camera without a frame would, so the loop's clocks (heartbeat, stats) keep running."""
        time.sleep(timeout or 0.0)

    def close(self, timeout: float = 1.0) -> None:
        """There is nothing open."""
