"""``python -m edge.tools.soak``: the service left running, watched for leaks and for what it writes.

Runs ``python -m edge run`` on the looping demo clip against a private mosquitto, with its outbox
journal in a temporary StateDirectory, and samples the service process from /proc every
``--every`` seconds: resident memory, threads, open file descriptors, and bytes it has caused to be
written to storage (``write_bytes`` in /proc/<pid>/io: what the SD card would see). Halfway through,
the broker is stopped for ``--outage`` seconds, so the same run shows the journal's write rate while
events pile up as well as with the broker there. A leak shows as RSS, threads or fds that keep
climbing after the first minute; the summary prints first, last and maximum of each. Linux only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge.tools.demo import DEMO_CLIP


def sample(pid: int) -> dict[str, float]:
    """RSS (MiB), threads, fds and cumulative write_bytes of process ``pid``."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return {
        "rss_mib": int(status["VmRSS"].split()[0]) / 1024,
        "threads": int(status["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "written": int(io["write_bytes"]),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(conf: Path) -> subprocess.Popen:
    mosquitto = "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else shutil.which("mosquitto")
    if mosquitto is None:
        raise SystemExit("soak: needs mosquitto (apt install mosquitto)")
    broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return broker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.tools.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the service runs (10)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples (10)")
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the broker is away, halfway (60; 0 = none)")
    parser.add_argument("--source", default=str(DEMO_CLIP), help="what the service watches (the looping demo clip)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="emotion-edge-soak-") as tmp:
        port = free_port()
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        broker = start_broker(conf)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMOTION_EDGE_") and k != "NOTIFY_SOCKET"}
        env |= {"STATE_DIRECTORY": tmp, "EMOTION_EDGE_CONFIG": os.devnull}
        command = [sys.executable, "-m", "edge", "run", "--source", args.source, "--loop"]
        command += ["--mqtt-host", "127.0.0.1", "--mqtt-port", str(port), "--device-id", "soak"]
        service = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.monotonic()
        duration = args.minutes * 60
        outage = (duration / 2, duration / 2 + args.outage) if args.outage else (duration + 1, duration + 1)
        rows: list[tuple[float, str, dict[str, float]]] = []
        try:
            while (elapsed := time.monotonic() - started) < duration and service.poll() is None:
                if outage[0] <= elapsed < outage[1] and broker.poll() is None:
                    broker.terminate()
                    broker.wait(5)
                elif elapsed >= outage[1] and broker.poll() is not None:
                    broker = start_broker(conf)
                phase = "outage" if broker.poll() is not None else "broker up"
                rows.append((elapsed, phase, sample(service.pid)))
                print(f"{elapsed:7.0f} s  {phase:9}  " + "  ".join(f"{k} {v:,.1f}" for k, v in rows[-1][2].items()),
                      flush=True)  # fmt: skip
                time.sleep(args.every)
        finally:
            service.terminate()
            code = service.wait(10)
            broker.terminate()
            broker.wait(5)
    if code not in (0, None):
        print(f"soak: the service exited with {code}")
        return 1
    summarize(rows)
    return 0


def summarize(rows: list[tuple[float, str, dict[str, float]]]) -> None:
    settled = [r for r in rows if r[0] >= 60] or rows  # the first minute is start-up: imports, model, caches
    for key in ("rss_mib", "threads", "fds"):
        values = [r[2][key] for r in settled]
        print(f"{key:8} after the first minute: first {values[0]:.1f}, last {values[-1]:.1f}, max {max(values):.1f}")
    # Writing from the first minute (bytecode caches) and the seconds after the broker's return (the
    # journal forgetting the backlog, during the reconnection) show in the phase they fall in.
    # Writing from the first minute (bytecode caches) and the seconds after the broker's return (the
    # journal forgetting the backlog, during the reconnection) show in the phase they fall in.
    for phase in ("broker up", "outage"):
        spans = [(a, b) for a, b in zip(rows, rows[1:]) if a[1] == b[1] == phase]
        seconds = sum(b[0] - a[0] for a, b in spans)
        written = sum(b[2]["written"] - a[2]["written"] for a, b in spans)
        if seconds:
            rate = written / seconds * 3600 / 1e6
            print(f"written with {phase}: {written / 1e6:.2f} MB in {seconds:.0f} s = {rate:.1f} MB/h")


if __name__ == "__main__":
    raise SystemExit(main())
