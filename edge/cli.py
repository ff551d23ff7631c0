"""``emotion-edge`` (also ``python -m edge``): run, check-config, analyze, bench, demo.

Exit codes: 0 success; 1 a named input could not be used (model, camera, file, broker for the demo);
2 bad command line (argparse); 78 (EX_CONFIG) bad configuration, so a systemd unit can say
``RestartPreventExitStatus=78`` instead of restarting into the same error.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from edge import __version__
from edge.config import Config, ConfigError, load, to_toml
from edge.detector import DetectorError
from edge.litert import BackendError
from edge.model_card import ModelError
from edge.sources import DEMO_CLIP, SourceError
from edge.systemd import under_journald

log = logging.getLogger("edge")

EX_CONFIG = 78
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def configure_logging(level: str) -> None:
    """Plain lines, no colours; journald stamps its own time, so the timestamp is left to it there."""
    fmt = "%(levelname)s %(message)s" if under_journald() else "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, datefmt="%H:%M:%S", stream=sys.stderr, force=True)


def _run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that were given, as config keys; flags left out leave the file's values alone."""
    flags = {
        "source.spec": args.source,
        "source.loop": args.loop,
        "mqtt.host": args.mqtt_host,
        "mqtt.port": args.mqtt_port,
        "mqtt.device_id": args.device_id,
        "logging.level": args.log_level,
    }
    return {key: value for key, value in flags.items() if value is not None}


def _serve(config: Config, max_frames: int | None) -> int:
    """Run the service in this (main) thread with SIGTERM/SIGINT wired to a clean stop."""
    from edge.service import Service

    service = Service(config, max_frames=max_frames)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        service.stop()
        signal.signal(signum, signal.SIG_DFL)  # a second one ends the process at once

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    service.run()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = load(args.config, overrides=_run_overrides(args))
    configure_logging(config.logging.level)
    return _serve(config, args.max_frames)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load(args.file)
    where = config.path or "built-in defaults (no config file)"
    print(f"{where}: OK")
    if args.show:
        print(to_toml(config), end="")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from edge import analyze

    config = load(args.config) if args.config else None
    return analyze.run(args.src, args.format, args.annotate, args.summary, config)


def cmd_bench(args: argparse.Namespace) -> int:
    from edge import bench

    bench.run(args.src, load(args.config) if args.config else None, frames=args.frames)
    return 0


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _demo_broker(config: Config) -> Iterator[None]:
    """Use the configured broker if it answers; else, for a local one, a throwaway mosquitto on a free port."""
    mqtt = config.mqtt
    if _port_open(mqtt.host, mqtt.port):
        yield
        return
    mosquitto = "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else shutil.which("mosquitto")
    if mqtt.host not in LOCAL_HOSTS or mosquitto is None:
        hint = "" if mqtt.host not in LOCAL_HOSTS else " and mosquitto is not installed (sudo apt install mosquitto)"
        raise ConnectionError(f"no MQTT broker answers on {mqtt.host}:{mqtt.port}{hint}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        mqtt.host, mqtt.port = "127.0.0.1", s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="emotion-edge-demo-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {mqtt.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                if _port_open(mqtt.host, mqtt.port) or broker.poll() is not None:
                    break
                threading.Event().wait(0.05)
            if broker.poll() is not None:
                raise ConnectionError(f"{mosquitto} exited at start (code {broker.returncode})")
            log.info("demo: no broker on localhost; started mosquitto on port %d for the demo", mqtt.port)
            yield
        finally:
            broker.terminate()
            broker.wait(5)


class _Printer:
    """Subscribes to the demo device's topics and prints what arrives, as ``topic payload`` lines."""

    def __init__(self, config: Config, topics: Any) -> None:
        from edge.mqtt import make_client

        self.topics = topics
        self.count = 0
        self.offline = threading.Event()
        subscribed = threading.Event()
        self.client = make_client(config.mqtt, f"{config.mqtt.client_id}-viewer")
        self.client.on_connect = lambda c, *_: c.subscribe(f"{topics.base}/#", qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(config.mqtt.host, config.mqtt.port, keepalive=config.mqtt.keepalive)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise ConnectionError(f"could not subscribe on {config.mqtt.host}:{config.mqtt.port}")

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        if msg.retain:  # left by an earlier run: not something this run published
            return
        self.count += 1
        print(f"{msg.topic} {msg.payload.decode(errors='replace')}", flush=True)
        if msg.topic == self.topics.availability and msg.payload == b"offline":
            self.offline.set()

    def close(self) -> None:
        """Clear the demo device's retained topics so the broker keeps nothing of a demo."""
        self.client.unsubscribe(f"{self.topics.base}/#")
        for topic in (self.topics.availability, self.topics.state, self.topics.stats):
            self.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.payloads import Topics

    overrides = _run_overrides(args)
    overrides.setdefault("source.spec", str(DEMO_CLIP))
    overrides.update({"homeassistant.enabled": False, "mqtt.stats_interval": 2.0})
    config = load(args.config, overrides=overrides)
    configure_logging(config.logging.level)
    # Its own device id, so a demo beside the real service never touches the service's topics.
    config.mqtt.device_id = f"{config.mqtt.device_id}-demo"
    topics = Topics.of(config.mqtt.topic_prefix, config.mqtt.device_id)
    try:
        with _demo_broker(config):
            printer = _Printer(config, topics)
            log.info("demo: %s -> %s:%d, printing what a subscriber of %s/# receives",
                     config.source.spec, config.mqtt.host, config.mqtt.port, topics.base)  # fmt: skip
            try:
                code = _serve(config, args.max_frames)
                printer.offline.wait(3)
            finally:
                printer.close()
    except (ConnectionError, OSError) as exc:
        log.error("demo: %s", exc)
        return 1
    log.info("demo: %d messages received", printer.count)
    return code


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=argparse.SUPPRESS,
        help="log level (default: [logging] level, info)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotion-edge", description="Facial-expression recognition on the edge, published over MQTT."
    )
    parser.add_argument("--version", action="version", version=f"emotion-edge {__version__}")
    _add_log_level(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def service_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE", help="TOML config (default: $EMOTION_EDGE_CONFIG, else "
                       "/etc/emotion-edge/config.toml if present, else built-in defaults)")  # fmt: skip
        p.add_argument("--source", metavar="SRC", help="auto, picamera2, 0, /dev/video0, a file/folder, a URL")
        p.add_argument("--max-frames", type=_positive, metavar="N", help="stop after N frames")
        p.add_argument("--mqtt-host", metavar="HOST")
        p.add_argument("--mqtt-port", type=int, metavar="PORT")
        p.add_argument("--device-id", metavar="ID", help="topic level naming this device (default: hostname)")
        p.add_argument("--loop", action="store_true", default=None, help="restart a file source at its end")
        _add_log_level(p)

    run = sub.add_parser("run", help="run the service: camera -> faces -> emotions -> MQTT")
    service_flags(run)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file without starting")
    check.add_argument("file", nargs="?", metavar="FILE", help="default: the file `run` would read")
    check.add_argument("--show", action="store_true", help="print the effective settings as TOML")
    _add_log_level(check)
    check.set_defaults(func=cmd_check_config)

    analyze = sub.add_parser("analyze", help="analyse a video, image or folder offline")
    analyze.add_argument("src", metavar="SRC", help="video file, image or folder of images")
    analyze.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="stdout format (jsonl)")
    analyze.add_argument("--annotate", metavar="OUT", help="write the input with boxes and labels drawn")
    analyze.add_argument("--summary", metavar="FILE", help="write the summary as JSON here instead of stderr")
    analyze.add_argument("--config", metavar="FILE", help="take [detector]/[classifier]/[tracker] from this file")
    _add_log_level(analyze)
    analyze.set_defaults(func=cmd_analyze)

    bench = sub.add_parser("bench", help="frames per second, per-stage times and memory on a clip")
    bench.add_argument("src", nargs="?", metavar="SRC", help="video, image or folder (default: the bundled clip)")
    bench.add_argument("--frames", type=_positive, default=300, metavar="N", help="frames to time (300)")
    bench.add_argument("--config", metavar="FILE", help="take [detector]/[classifier]/[tracker] from this file")
    _add_log_level(bench)
    bench.set_defaults(func=cmd_bench)

    demo = sub.add_parser("demo", help="run the pipeline on the bundled clip and print what MQTT subscribers get")
    service_flags(demo)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.log_level = getattr(args, "log_level", None)
    configure_logging(args.log_level or "info")
    try:
        return args.func(args)
    except ConfigError as exc:
        log.error("%s", exc)
        return EX_CONFIG
    except (ModelError, BackendError, DetectorError, SourceError) as exc:
        log.error("%s", exc)
        return 1
