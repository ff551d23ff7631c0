"""A fleet that is not there: schema-valid events from many made-up devices, for loading watchers.

``python -m edge.watch.loadgen --port 1883 --devices 50 --events 100`` publishes, as each of the
devices, a run of visits (start, changes, end) built by the real payload code, with ``run``/``seq``
like the service's, at QoS 1, as fast as the broker takes them, bounded by ``--events`` per device
and ``--seconds`` in all. It prints what it published and the rate; the watchers' databases say
what arrived. Only ever point it at a broker of your own (it is a load test).
"""

from __future__ import annotations

import argparse
import random
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from edge.mqtt import payloads
from edge.vision.emotions import EMOTIONS


@dataclass
class FakeEvent:
    """What payloads.event() reads of a tracker event."""

    kind: str
    track: int
    emotion: str
    confidence: float
    scores: dict[str, float]
    box: tuple[int, int, int, int]
    started: float
    ts: float
    previous: str | None  # the emotion before a change


def device_events(device: str, count: int, rng: random.Random, start: float) -> list[dict[str, Any]]:
    """``count`` events of one device: visits of 2 to 6 events each, one second apart."""
    run, track, t = secrets.token_hex(4), 0, start
    bodies: list[dict[str, Any]] = []
    while len(bodies) < count:
        track += 1
        started = t
        length = min(rng.randint(2, 6), count - len(bodies))
        previous: str | None = None
        for i in range(length):
            kind = "start" if i == 0 else "end" if i == length - 1 else "change"
            # a change is to another emotion; an end keeps the visit's last one
            emotion = previous if kind == "end" and previous else rng.choice([e for e in EMOTIONS if e != previous])
            raw = [rng.random() for _ in EMOTIONS]
            scores = {label: p / sum(raw) for label, p in zip(EMOTIONS, raw)}
            before = previous if kind == "change" else None
            event = FakeEvent(kind, track, emotion, scores[emotion], scores, (10, 20, 100, 100), started, t, before)
            previous = emotion
            bodies.append(payloads.event(event, device=device, wall=t, labels=EMOTIONS, run=run, seq=len(bodies) + 1))
            t += 1.0
    return bodies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.watch.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--prefix", default="emotion-edge")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--events", type=int, default=100, help="events per device")
    parser.add_argument("--seconds", type=float, default=60.0, help="stop publishing after this long")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    start = time.time() - 3600
    fleet = {f"load-{n:03d}": device_events(f"load-{n:03d}", args.events, rng, start) for n in range(args.devices)}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"emotion-edge-loadgen-{secrets.token_hex(3)}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(args.host, args.port)
    client.loop_start()
    began = time.monotonic()
    deadline = began + args.seconds
    sent = []
    for i in range(args.events):  # interleaved, as a fleet publishes
        if time.monotonic() > deadline:
            break
        for device, bodies in fleet.items():
            sent.append(client.publish(f"{args.prefix}/{device}/events", payloads.encode(bodies[i]), qos=1))
    for info in sent:
        info.wait_for_publish(max(0.1, deadline - time.monotonic()))
    elapsed = time.monotonic() - began
    acked = sum(info.is_published() for info in sent)
    client.disconnect()
    client.loop_stop()
    print(f"loadgen: {acked} of {len(sent)} events acknowledged from {len(fleet)} devices in {elapsed:.2f} s "
          f"({acked / max(elapsed, 1e-9):.0f} events/s)")  # fmt: skip
    return 0 if acked == len(sent) else 1


if __name__ == "__main__":
    sys.exit(main())
