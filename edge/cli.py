"""``emotion-edge`` (also ``python -m edge``): run, check-config, forget, analyze, bench, demo, watch, report.

Exit codes: 0 success; 1 a named input could not be used (model, camera, file, broker for the demo);
2 bad command line (argparse); 78 (EX_CONFIG) bad configuration, so a systemd unit can say
``RestartPreventExitStatus=78`` instead of restarting into the same error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from edge import __version__
from edge.arguments import number
from edge.config import ConfigError, check_client_id, check_topic_level, load, to_toml
from edge.mqtt.forget import ForgetError
from edge.report import GROUP_BY
from edge.sources import SourceError
from edge.systemd import under_journald
from edge.tools.demo import DEMO_CLIP
from edge.tools.outputs import OutputError, check_output
from edge.tools.truth import TruthError
from edge.vision.detector import DetectorError
from edge.vision.litert import BACKENDS, BackendError
from edge.vision.model_card import ModelError

log = logging.getLogger("edge")

EX_CONFIG = 78


def configure_logging(level: str) -> None:
    """Plain lines, no colours; journald stamps its own time, so the timestamp is left to it there."""
    fmt = "%(levelname)s %(message)s" if under_journald() else "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, datefmt="%H:%M:%S", stream=sys.stderr, force=True)


def _run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that were given, as config keys; flags left out leave the file's values alone."""
    flags = {
        "source.spec": args.source,
        "source.loop": args.loop,
        "source.realtime": args.realtime,
        "mqtt.host": args.mqtt_host,
        "mqtt.port": args.mqtt_port,
        "mqtt.device_id": args.device_id,
        "logging.level": args.log_level,
    }
    return {key: value for key, value in flags.items() if value is not None}


def cmd_run(args: argparse.Namespace) -> int:
    config = load(args.config, overrides=_run_overrides(args))
    configure_logging(config.logging.level)
    from edge.service import serve

    return serve(config, args.max_frames)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load(args.file)
    from edge.mqtt.publisher import tls_context
    from edge.pipeline import Pipeline
    from edge.service import open_service_source
    from edge.sources import names_a_camera

    # The TLS files, the model (its card and sha256), the interpreter and the cascade are loaded as `run`
    # loads them, and a file source is opened as `run` opens it, so a file called OK here starts; bad TLS
    # files are a ConfigError (exit 78), the rest ModelError/DetectorError/BackendError/SourceError (exit 1).
    # A camera is left alone: the running service may hold it, and `run` waits for one not there yet.
    if config.mqtt.tls:
        tls_context(config.mqtt)
    Pipeline.from_config(config)
    if not names_a_camera(config.source.spec):
        open_service_source(config).close()
    where = config.path or "built-in defaults (no config file)"
    print(f"{where}: OK")
    if args.show:
        print(to_toml(config), end="")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from edge.mqtt.forget import forget

    config = load(args.config)
    done = forget(config)
    log.info("forget: cleared %d retained topics of %s on %s:%d, and %d more it may have left unseen (none there,"
             " or not readable by this user)", len(done.found), config.mqtt.device_id, config.mqtt.host,
             config.mqtt.port, len(done.unseen))  # fmt: skip
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from edge.tools import analyze

    config = load(args.config) if args.config else None
    return analyze.run(args.src, args.format, args.annotate, args.summary, config, raw=args.raw, report=args.report)


def cmd_watch(args: argparse.Namespace) -> int:
    from edge.watch.store import StoreError
    from edge.watch.watcher import serve

    overrides = {"mqtt.host": args.mqtt_host, "mqtt.port": args.mqtt_port, "logging.level": args.log_level}
    config = load(args.config, overrides={k: v for k, v in overrides.items() if v is not None})
    configure_logging(config.logging.level)
    try:
        return serve(config.mqtt, args.db, group=args.group, client_id=args.client_id, refresh=args.refresh)
    except StoreError as exc:
        log.error("%s", exc)
        return 1


def cmd_report(args: argparse.Namespace) -> int:
    from edge import report

    if args.jsonl and (args.since or args.device or args.group_by != "device"):
        log.error("report: --since, --device and --group-by apply to --db; a recording's rows are its faces")
        return 2
    try:
        check_output(args.out, report.SUFFIXES)
        if args.jsonl:
            records, fps = report.read_jsonl(args.jsonl)
            built = report.from_records(records, fps=fps, source=args.jsonl)
        else:
            since = report.parse_since(args.since) if args.since else None
            built = report.from_databases(args.db, since=since, device=args.device, group_by=args.group_by)
        log.info("report: %s written", report.write(built, args.out))
    except ImportError as exc:
        log.error("report needs the [report] extra (pip install 'emotion-edge[report]'): %s", exc)
        return 1
    except OutputError as exc:
        log.error("report: -o %s", exc)
        return 1
    except report.ReportError as exc:
        log.error("report: %s", exc)
        return 1
    except OSError as exc:
        log.error("report: %s: %s", exc.filename or args.out, exc.strerror or exc)
        return 1
    return 0


# bench's options of one kind of bench each (argparse key -> how the user wrote it); unset ones are None, so
# that what was given is known, and the bench's own defaults apply to the rest
PIPELINE_BENCH = {"src": "SRC", "frames": "--frames", "config": "--config", "truth": "--truth"}
CLASSIFIER_BENCH = {"model": "--model", "backend": "--backend", "threads": "--threads", "faces": "--faces"}


def cmd_bench(args: argparse.Namespace) -> int:
    from edge.tools import bench

    # an option of the other bench would be ignored, and the figures taken for what it asked
    other = PIPELINE_BENCH if args.classifier else CLASSIFIER_BENCH
    if given := [option for key, option in other.items() if getattr(args, key) is not None]:
        which = "the pipeline's bench, not --classifier" if args.classifier else "--classifier"
        hint = "" if args.classifier else "; the pipeline takes [classifier] from --config"
        log.error("bench: %s %s to %s%s", ", ".join(given), "apply" if given[1:] else "applies", which, hint)
        return 2
    if args.classifier:
        bench.run_classifier(args.model, **_given(backend=args.backend, threads=args.threads, n=args.faces))
    else:
        config = load(args.config) if args.config else None
        bench.run(args.src, config, truth=args.truth, **_given(frames=args.frames))
    return 0


def _given(**options: Any) -> dict[str, Any]:
    """The options the user gave (argparse leaves the others None): the called function's defaults are the rest."""
    return {key: value for key, value in options.items() if value is not None}


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.tools import demo

    overrides = _run_overrides(args)
    overrides.setdefault("source.spec", str(DEMO_CLIP))
    overrides.update({"homeassistant.enabled": False, "mqtt.stats_interval": 2.0})
    config = load(args.config, overrides=overrides)
    configure_logging(config.logging.level)
    return demo.run(config, args.max_frames)


def _argument(check: Callable[[str], str]) -> Callable[[str], str]:
    """An argparse type from a config check, so a flag is held to what the setting of its kind is."""

    def parse(text: str) -> str:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _seconds(text: str) -> float:
    """--refresh: a positive number of seconds (0 would redraw the view in a busy loop)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return seconds


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
        p.add_argument("--max-frames", type=number(int, 1), metavar="N", help="stop after N frames")
        p.add_argument("--mqtt-host", metavar="HOST")
        p.add_argument("--mqtt-port", type=int, metavar="PORT")
        p.add_argument("--device-id", metavar="ID", help="topic level naming this device (default: hostname)")
        p.add_argument("--loop", action="store_true", default=None, help="restart a file source at its end")
        p.add_argument(
            "--realtime", action="store_true", default=None, help="play a file source at its own rate, as a camera"
        )
        _add_log_level(p)

    run = sub.add_parser("run", help="run the service: camera -> faces -> emotions -> MQTT")
    service_flags(run)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file (and load its model) without starting")
    check.add_argument("file", nargs="?", metavar="FILE", help="default: the file `run` would read")
    check.add_argument("--show", action="store_true", help="print the effective settings as TOML")
    _add_log_level(check)
    check.set_defaults(func=cmd_check_config)

    forget = sub.add_parser(
        "forget", help="clear this device's retained topics and Home Assistant discovery on the broker"
    )
    forget.add_argument("--config", metavar="FILE", help="the config whose broker and device to clear")
    _add_log_level(forget)
    forget.set_defaults(func=cmd_forget)

    analyze = sub.add_parser("analyze", help="analyse a video, image or folder offline")
    analyze.add_argument("src", metavar="SRC", help="video file, image or folder of images")
    analyze.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="stdout format (jsonl)")
    analyze.add_argument("--annotate", metavar="OUT", help="write the input with boxes and labels drawn")
    analyze.add_argument("--summary", metavar="FILE", help="write the summary as JSON here instead of stderr")
    analyze.add_argument("--config", metavar="FILE", help="take [detector]/[classifier]/[tracker] from this file")
    analyze.add_argument("--raw", action="store_true", help="add each face's unsmoothed scores (raw) to every record")
    analyze.add_argument("--report", metavar="OUT", help="write an HTML page (.html) or figure (.png) of the run")
    _add_log_level(analyze)
    analyze.set_defaults(func=cmd_analyze)

    bench = sub.add_parser("bench", help="frames per second, per-stage times and memory on a clip")
    bench.add_argument("src", nargs="?", metavar="SRC", help="video, image or folder (default: the bundled clip)")
    bench.add_argument("--frames", type=number(int, 1, 100_000), metavar="N", help="frames to time (300)")
    bench.add_argument("--config", metavar="FILE", help="take [detector]/[classifier]/[tracker] from this file")
    bench.add_argument("--truth", metavar="TRUTH.json", help="score each frame against this truth (plays SRC once)")
    bench.add_argument("--classifier", action="store_true", help="time the emotion classifier alone, ms per face")
    bench.add_argument("--model", metavar="M", help="with --classifier: a .tflite with its .json card")
    bench.add_argument("--backend", choices=("auto", *BACKENDS), help="with --classifier (auto)")
    bench.add_argument("--threads", type=number(int, 1, 64), metavar="N", help="with --classifier: threads (1)")
    bench.add_argument("--faces", "--n", type=number(int, 1, 100_000), metavar="N", help="with --classifier (500)")
    _add_log_level(bench)
    bench.set_defaults(func=cmd_bench)

    demo = sub.add_parser("demo", help="run the pipeline on the bundled clip and print what MQTT subscribers get")
    service_flags(demo)
    demo.set_defaults(func=cmd_demo)

    watch = sub.add_parser("watch", help="store a fleet's MQTT events in SQLite and show every device live")
    watch.add_argument("--config", metavar="FILE", help="take [mqtt] (broker, credentials, TLS, topic_prefix) from it")
    watch.add_argument("--mqtt-host", metavar="HOST")
    watch.add_argument("--mqtt-port", type=int, metavar="PORT")
    watch.add_argument("--db", default="emotion-edge.db", metavar="FILE", help="SQLite database (emotion-edge.db)")
    watch.add_argument(
        "--group", type=_argument(check_topic_level), metavar="NAME",
        help="share the load with other watchers of this MQTT 5 group",
    )  # fmt: skip
    watch.add_argument(
        "--client-id", type=_argument(check_client_id), metavar="ID",
        help="a fixed id: the broker keeps its queue while it is away",
    )  # fmt: skip
    watch.add_argument("--refresh", type=_seconds, metavar="S", help="seconds between views (1 on a terminal, else 10)")
    _add_log_level(watch)
    watch.set_defaults(func=cmd_watch)

    rep = sub.add_parser("report", help="an HTML page or PNG of what a fleet or a recording felt")
    given = rep.add_mutually_exclusive_group(required=True)
    given.add_argument("--db", action="append", metavar="FILE", help="a `watch` database (repeat for several)")
    given.add_argument("--jsonl", metavar="FILE", help="the output of `emotion-edge analyze`")
    rep.add_argument("--since", metavar="WHEN", help="only events since: 24h, 90m, 7d or an ISO 8601 time")
    rep.add_argument("--device", metavar="ID", help="only this device")
    rep.add_argument("--group-by", choices=GROUP_BY, default="device", help="rows of the table (device)")
    rep.add_argument("-o", "--out", required=True, metavar="OUT", help="report.html (a page) or report.png")
    _add_log_level(rep)
    rep.set_defaults(func=cmd_report)
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
    except (ModelError, BackendError, DetectorError, SourceError, ForgetError, TruthError) as exc:
        log.error("%s", exc)
        return 1
