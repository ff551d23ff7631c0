"""Every setting of the edge service, read from one TOML file and checked before anything starts.

Precedence, lowest first: built-in defaults, the TOML file, ``EMOTION_EDGE_<SECTION>_<KEY>``
environment variables (so a systemd drop-in or a container can change one value without editing the
file), command-line flags. A bad value stops the start with one line naming the file or variable and
the key, because a service that silently ignores a typo in ``[mqtt]`` publishes nowhere for weeks.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import secrets
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from edge.identity import MACHINE_ID_ENV, default_device_id
from edge.vision.detector import DETECTORS, DetectorError, find_cascade
from edge.vision.litert import BACKENDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.9/3.10 Pis only
    import tomli as tomllib

ENV_PREFIX = "EMOTION_EDGE_"
CONFIG_ENV = "EMOTION_EDGE_CONFIG"
# Variables of the prefix that are no setting: the config file, edge.identity's machine id file, setup.sh's
# Pi detection, and the tests' screenshot target. Any other one that names no section is a typo.
OTHER_VARIABLES = frozenset({CONFIG_ENV, MACHINE_ID_ENV, "EMOTION_EDGE_PI", "EMOTION_EDGE_SCREENSHOT"})
SYSTEM_CONFIG = Path("/etc/emotion-edge/config.toml")
LOG_LEVELS = ("debug", "info", "warning", "error")


class Shape(NamedTuple):
    """What a string setting must look like, and how its error line says so: a regex alone would leave the
    message to guess which of the keys using it (one topic level, or several) it was."""

    regex: re.Pattern[str]
    wanted: str


MQTT_STRING = 65535  # bytes an MQTT string holds (client id, user name, password): longer ones crash the client
MAX_NAME = 128  # characters of a device id (and an event's run id) that `watch` stores
# characters of a topic prefix: with a device id of MAX_NAME and the longest level after it, every topic stays far
# within the 65535 bytes an MQTT topic holds, beyond which the client's thread crashes
MAX_PREFIX = 1024

# MQTT topics: no wildcards, nothing a broker or Home Assistant would reject; a device id is one level.
_CHARS = "letters, digits, '_', '-' or '.'"
_TOPIC_LEVEL = Shape(
    re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"),
    f"{_CHARS}, starting with a letter or digit (one topic level: no '/', '+', '#' or spaces)",
)
_TOPIC_PATH = Shape(
    re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$"),
    f"levels of {_CHARS} joined by '/', e.g. home/emotions, each starting with a letter or digit "
    "(no '+', '#' or spaces)",
)


class ConfigError(ValueError):
    """A setting that cannot be used; str() is the single line shown to the user."""


def setting(
    default: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
    pattern: Shape | None = None,
    longest: int | None = None,
    doc: str = "",
) -> Any:
    """A dataclass field whose metadata says what values are valid, so one checker serves every key;
    ``longest`` bounds a string's UTF-8 bytes."""
    meta = {"lo": lo, "hi": hi, "choices": choices, "pattern": pattern, "longest": longest, "doc": doc}
    return field(default=default, metadata=meta)


@dataclass
class SourceConfig:
    """Where frames come from."""

    spec: str = setting(
        "auto",
        doc="where frames come from: `auto` (the Pi camera if attached, else the first USB webcam), `picamera2`, "
        "a webcam index (`0`) or device (`/dev/video0`, or its stable name under `/dev/v4l/by-id/`), a video file, "
        "a folder of images (frames in name order, `fps` apart), an image (with `loop` only: one frame is too few "
        "for a track), an `rtsp://` or `http://` URL; photos are for `emotion-edge analyze`",
    )
    width: int = setting(640, lo=16, hi=7680, doc="capture width in pixels; faces are cropped from this resolution")
    height: int = setting(480, lo=16, hi=4320, doc="capture height in pixels")
    fps: float = setting(
        0.0,
        lo=0,
        hi=240,
        doc="rate asked of a camera, and a folder's or image's frames per second (0: the camera's own; 1 per second"
        " for stills); a video file keeps its own rate",
    )
    loop: bool = setting(
        False, doc="restart a video file or folder at its end instead of stopping; repeat an image as a camera would"
    )
    realtime: bool = setting(
        False,
        doc="play a video file, folder or image at its own rate, as a camera delivers frames, instead of as fast as "
        "they are processed (a folder or image: `fps`, else 1 per second)",
    )


@dataclass
class DetectorConfig:
    """Finding faces in each frame."""

    type: str = setting(
        "haar", choices=tuple(DETECTORS), doc="face detector backend; `haar` is OpenCV's frontal-face Haar cascade"
    )
    cascade: str = setting(
        "",
        doc="cascade XML: a file, or the name of one of OpenCV's cascades (cv2.data, Debian's "
        "/usr/share/opencv4/haarcascades); empty = `haarcascade_frontalface_alt2.xml`",
    )
    scale_factor: float = setting(1.2, lo=1.01, hi=2.0, doc="image pyramid step: smaller finds more faces, slower")
    min_neighbors: int = setting(
        3, lo=0, hi=50, doc="overlapping hits needed to accept a face: higher, fewer false faces"
    )
    min_size: int = setting(40, lo=8, hi=4096, doc="smallest face in full-resolution pixels")
    detect_width: int = setting(
        320, lo=64, hi=7680, doc="frames are downscaled to this width for full scans; boxes are scaled back"
    )
    full_scan_interval: float = setting(
        1.0,
        lo=0,
        hi=60,
        doc="seconds between full-frame scans while nothing changes; between them only the regions around "
        "followed faces are scanned, at full resolution (0 = a full scan every frame)",
    )
    region_margin: float = setting(
        0.5, lo=0, hi=3, doc="a followed face's region: its box grown by this fraction of its width on every side"
    )
    motion_threshold: float = setting(
        10.0,
        lo=0,
        hi=255,
        doc="gray levels an 8x8 block must change by, outside the followed faces, to call a full scan (0 = off)",
    )


@dataclass
class ClassifierConfig:
    """The emotion model and the interpreter that runs it."""

    model: str = setting(
        "", doc="`.tflite` model with its `.json` card beside it; empty = the shipped `models/emotion_int8.tflite`"
    )
    backend: str = setting(
        "auto",
        choices=("auto", *BACKENDS),
        doc="TFLite interpreter; `auto` tries ai_edge_litert, then tflite_runtime, then tensorflow",
    )
    num_threads: int = setting(
        0,
        lo=0,
        hi=64,
        doc="interpreter threads; 0 = one fewer than the CPUs the service may use, at most 4 (capture and MQTT "
        "keep the spare one)",
    )


@dataclass
class TrackerConfig:
    """Following faces across frames and turning their emotions into events."""

    smoothing: float = setting(
        0.15,
        lo=0,
        hi=30,
        doc="seconds: time constant of each face's running probabilities, the same at any frame rate (0 = none)",
    )
    hysteresis: float = setting(
        0.1, lo=0, hi=1, doc="how far a new emotion must lead the current one before the label changes: stops flicker"
    )
    max_missing: float = setting(1.0, lo=0, hi=3600, doc="seconds a face may vanish before its track ends")
    iou_threshold: float = setting(
        0.3, lo=0.01, hi=1, doc="box overlap (intersection over union) that links a face to an existing track"
    )
    min_hits: int = setting(
        2,
        lo=1,
        hi=100,
        doc="frames in a row a face must be seen before its track starts (1 = at once): "
        "a one-frame false face makes no events; its START is dated its first frame",
    )
    steady: float = setting(
        0.2,
        lo=0,
        hi=30,
        doc="seconds the classifier must name a new emotion on every look to switch the label at once (0 = off)",
    )
    appearance: float = setting(
        0.3,
        lo=0,
        hi=1,
        doc="thumbnail likeness (correlation) a face needs to continue a track; below, it is a new person (0 = off)",
    )
    hold: float = setting(
        0.5,
        lo=0,
        hi=30,
        doc="seconds a followed face is reported where it was without being detected, while it looks the same "
        "there: a missed face, or one not looked for since its look did not change (0 = off)",
    )
    reclassify: float = setting(
        0.5,
        lo=0,
        hi=30,
        doc="seconds before a followed face whose look has not changed is classified again (0 = every face is "
        "looked for and classified on every frame)",
    )


@dataclass
class MqttConfig:
    """The broker, the topics and what happens while the broker is away."""

    host: str = setting("localhost", doc="broker host name or address")
    port: int = setting(1883, lo=1, hi=65535, doc="broker port (8883 is usual for TLS)")
    client_id: str = setting(
        "",
        longest=MQTT_STRING,
        doc="MQTT client id; empty = `emotion-edge-<device_id>-<6 random hex>`, new on every start",
    )
    username: str = setting("", longest=MQTT_STRING, doc="broker user; empty = anonymous")
    password: str = setting("", longest=MQTT_STRING, doc="broker password")
    tls: bool = setting(
        False, doc="use TLS; implied by `tls_ca`/`tls_cert`; with no `tls_ca` the system's CA certificates are used"
    )
    tls_ca: str = setting("", doc="CA certificate file that signed the broker's certificate")
    tls_cert: str = setting("", doc="client certificate file, for brokers that require one")
    tls_key: str = setting("", doc="client private key file")
    keepalive: int = setting(
        15,
        lo=1,
        hi=3600,
        doc="seconds between keepalive pings; a silent link is noticed within 2x this, and the broker publishes "
        "the last will after 1.5x this",
    )
    reconnect_max: float = setting(
        5.0, lo=0.5, hi=300, doc="most seconds between reconnection attempts (doubling from 0.5 s, with jitter)"
    )
    qos: int = setting(1, lo=0, hi=2, doc="QoS of everything published")
    topic_prefix: str = setting(
        "emotion-edge",
        pattern=_TOPIC_PATH,
        longest=MAX_PREFIX,
        doc="first topic level(s): topics are `<topic_prefix>/<device_id>/…`",
    )
    device_id: str = setting(
        "",
        pattern=_TOPIC_LEVEL,
        longest=MAX_NAME,
        doc="topic level naming this device; empty = the hostname, plus a suffix from /etc/machine-id for a stock "
        "name such as raspberrypi",
    )
    queue_size: int = setting(
        20_000,
        lo=1,
        hi=10_000_000,
        doc="events the outbox keeps while the broker has not acknowledged them (about 0.7 kB of memory "
        "each); beyond it the oldest are dropped and counted in stats `events_dropped`",
    )
    outbox_max_age: float = setting(
        86400.0, lo=1, hi=31_536_000, doc="seconds an unacknowledged event is kept before it is dropped and counted"
    )
    outbox: str = setting(
        "",
        doc="the outbox journal (SQLite) keeping unacknowledged events across restarts; empty = `outbox.db` "
        "in systemd's `StateDirectory` (`/var/lib/emotion-edge`), memory only outside systemd",
    )
    sync_interval: float = setting(
        1.0,
        lo=0.05,
        hi=60,
        doc="seconds between writes of the outbox journal: a power cut loses at most this much of the events "
        "the broker has not acknowledged",
    )
    heartbeat: float = setting(
        60.0, lo=1, hi=86400, doc="seconds between re-sends of the retained state when nothing changes"
    )
    stats_interval: float = setting(30.0, lo=1, hi=86400, doc="seconds between stats messages")


@dataclass
class HomeAssistantConfig:
    """Home Assistant MQTT discovery."""

    enabled: bool = setting(
        True, doc="publish Home Assistant MQTT discovery, so the device and its sensors appear by themselves"
    )
    discovery_prefix: str = setting(
        "homeassistant", pattern=_TOPIC_PATH, longest=MAX_PREFIX, doc="Home Assistant's discovery prefix"
    )
    status_topic: str = setting(
        "homeassistant/status",
        pattern=_TOPIC_PATH,
        longest=MAX_PREFIX,
        doc="where Home Assistant announces itself (its MQTT integration's birth message topic); a separate "
        "setting there, so it does not follow `discovery_prefix`",
    )
    birth_delay: float = setting(
        5.0,
        lo=0,
        hi=300,
        doc="discovery is re-sent a random 0..this many seconds after Home Assistant announces itself, so many "
        "devices do not answer a restarted Home Assistant at once",
    )
    scores_interval: float = setting(
        10.0, lo=1, hi=86400, doc="seconds at least between …/scores messages (the Emotion entity's attributes)"
    )


@dataclass
class PreviewConfig:
    """The live view: a web page of the annotated camera frames, for aiming the camera (off: no image leaves)."""

    enabled: bool = setting(False, doc="serve the live view page")
    bind: str = setting("127.0.0.1", doc="address to listen on; 127.0.0.1 = this machine only (use an SSH tunnel)")
    port: int = setting(8090, lo=1, hi=65535, doc="TCP port of the live view")


@dataclass
class SummaryConfig:
    """The rolling summary on <prefix>/<device>/summary: what the room felt over the last interval."""

    interval: float = setting(
        60.0, lo=0, hi=86400, doc="seconds each retained summary covers (share of face-time per emotion); 0 = none"
    )


@dataclass
class LoggingConfig:
    """What the service writes to its log (the journal under systemd)."""

    level: str = setting("info", choices=LOG_LEVELS, doc="log level")


SECTIONS: dict[str, type] = {
    "source": SourceConfig,
    "detector": DetectorConfig,
    "classifier": ClassifierConfig,
    "tracker": TrackerConfig,
    "mqtt": MqttConfig,
    "homeassistant": HomeAssistantConfig,
    "preview": PreviewConfig,
    "summary": SummaryConfig,
    "logging": LoggingConfig,
}


@dataclass
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    summary: SummaryConfig = field(default_factory=SummaryConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    path: Path | None = None  # the file read, None when running on defaults
    origins: dict[str, str] = field(default_factory=dict)  # "mqtt.port" -> where its value came from
    derived: set[str] = field(default_factory=set)  # settings left empty and filled in for this device and start


def resolve_path(path: str | Path | None) -> Path | None:
    """The file to read: the one given, else $EMOTION_EDGE_CONFIG, else /etc/emotion-edge/config.toml if present."""
    if path is not None:
        return Path(path)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


def load(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the checked Config from file, environment and flags (``overrides``: "mqtt.port" -> value).

    Raises ConfigError with one line naming the source and key of the first bad setting.
    """
    config = Config(path=resolve_path(path))
    if config.path is not None:
        _apply(config, _read_toml(config.path), config.path.name, parse=False)
    environ = os.environ if env is None else env
    _apply_env(config, environ)
    if overrides:
        _apply(config, _nest(overrides), "command line", parse=False)
    _finish(config)
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    try:  # an editor's byte-order mark (Windows Notepad writes one) is no TOML, and no reason to refuse
        return tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path.name}: not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x})") from None


def _nest(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in flat.items():
        section, key = dotted.split(".", 1)
        nested.setdefault(section, {})[key] = value
    return nested


def _apply_env(config: Config, environ: Mapping[str, str]) -> None:
    """EMOTION_EDGE_<SECTION>_<KEY>; any other variable of the prefix is an error naming it (a typo such as
    EMOTION_EDGE_MQQT_HOST would otherwise be a setting silently not made), but OTHER_VARIABLES."""
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in OTHER_VARIABLES:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if section is None:
            raise ConfigError(f"{name}: {_unknown_section(rest)}")
        key = rest[len(section) + 1 :]
        _apply(config, {section: {key: environ[name]}}, name, parse=True)


def _unknown_section(rest: str) -> str:
    """What is wrong with the variable EMOTION_EDGE_<rest> whose start names no section: a section without
    its key, a section split in two words (HOME_ASSISTANT_…), or the section its first word is closest to."""
    if rest in SECTIONS:
        return f"names section {rest} but no key (EMOTION_EDGE_{rest.upper()}_<KEY>)"
    words = rest.split("_")
    if len(words) > 2 and (joined := "".join(words[:2])) in SECTIONS:
        return f"{words[0]}_{words[1]}: unknown section; did you mean {joined}?"
    return f"{words[0]}: unknown section{_suggest(words[0], SECTIONS)}"


def _apply(config: Config, data: Mapping[str, Any], where: str, *, parse: bool) -> None:
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{where}: {section}: unknown section{_suggest(section, SECTIONS)}")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: {section}: expected a [{section}] table, got {_show(table)}")
        target = getattr(config, section)
        fields = {f.name: f for f in dataclasses.fields(target)}
        for key, raw in table.items():
            name = f"{section}.{key}"
            if key not in fields:
                raise ConfigError(f"{where}: {name}: unknown key{_suggest(key, fields)}")
            try:
                value = _check(fields[key], _parse(raw, type(fields[key].default)) if parse else raw)
            except ValueError as exc:
                raise ConfigError(f"{where}: {name}: {exc}") from None
            setattr(target, key, value)
            config.origins[name] = where


def _suggest(word: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f"; did you mean {close[0]}?" if close else f" (known: {', '.join(known)})"


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _parse(text: str, kind: type) -> Any:
    """Environment values are strings; turn them into the key's type, leaving bad ones for _check to name."""
    text = text.strip()
    try:
        if kind is bool and text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        pass
    return text


def _check(spec: dataclasses.Field, value: Any) -> Any:
    """Return the value in the key's type or raise ValueError("expected …, got …")."""
    kind = type(spec.default)
    lo, hi, choices, pattern, longest = (spec.metadata[k] for k in ("lo", "hi", "choices", "pattern", "longest"))
    span = f" {_num(lo)}..{_num(hi)}" if lo is not None else ""
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_show(value)}")
        return value
    if kind in (int, float):
        ok_type = isinstance(value, int) if kind is int else isinstance(value, (int, float))
        noun = "an integer" if kind is int else "a number"
        if isinstance(value, bool) or not ok_type or (lo is not None and not lo <= value <= hi):
            raise ValueError(f"expected {noun}{span}, got {_show(value)}")
        return int(value) if kind is int else float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_show(value)}")
    if choices is not None and value not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}, got {_show(value)}")
    if pattern is not None and value and not pattern.regex.match(value):
        raise ValueError(f"expected {pattern.wanted}, got {_show(value)}")
    if longest is not None and len(size := value.encode("utf-8", "surrogateescape")) > longest:
        raise ValueError(f"expected at most {longest} bytes, got {len(size)}")
    return value


def check_topic_level(text: str) -> str:
    """``text`` if it can name something in one MQTT topic level as a device id does, else ValueError saying
    what it must be."""
    if not text:
        raise ValueError(f"expected {_TOPIC_LEVEL.wanted}, got ''")
    return _check(_mqtt_field("device_id"), text)


def check_client_id(text: str) -> str:
    """``text`` if it can be an MQTT client id, else ValueError."""
    return _check(_mqtt_field("client_id"), text)


def _mqtt_field(name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(MqttConfig) if f.name == name)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _finish(config: Config) -> None:
    """Fill the derived defaults and check what one key alone cannot: files that must exist, pairs."""
    mqtt = config.mqtt
    if not mqtt.host:
        raise ConfigError(f"{_where(config, 'mqtt.host')}: mqtt.host: expected a host name, got ''")
    config.derived = {f"mqtt.{key}" for key in ("device_id", "client_id") if not getattr(mqtt, key)}
    mqtt.device_id = mqtt.device_id or default_device_id()
    # Two clients with one id knock each other off the broker in a loop; a random suffix prevents it.
    mqtt.client_id = mqtt.client_id or f"emotion-edge-{mqtt.device_id}-{secrets.token_hex(3)}"
    if mqtt.tls_key and not mqtt.tls_cert:
        raise ConfigError(f"{_where(config, 'mqtt.tls_key')}: mqtt.tls_key: set mqtt.tls_cert too")
    if mqtt.password and not mqtt.username:
        raise ConfigError(f"{_where(config, 'mqtt.password')}: mqtt.password: set mqtt.username too")
    mqtt.tls = mqtt.tls or bool(mqtt.tls_ca or mqtt.tls_cert)
    for name in ("mqtt.tls_ca", "mqtt.tls_cert", "mqtt.tls_key", "classifier.model", "mqtt.outbox", "detector.cascade"):
        section, key = name.split(".")
        value = getattr(getattr(config, section), key)
        if not value:
            continue
        where = f"{_where(config, name)}: {name}"
        try:
            _check_path(name, value, where)
        except PermissionError as exc:  # a folder on the way that this user may not enter
            raise ConfigError(f"{where}: cannot check {exc.filename}: permission denied") from None


def _check_path(name: str, value: str, where: str) -> None:
    """The file the setting ``name`` names exists, or for the outbox's journal, can be made where it is to be."""
    if name == "mqtt.outbox":  # unchecked, a journal that cannot be opened keeps events in memory only
        outbox = Path(value)
        above = next(p for p in outbox.parents if p.exists())
        if outbox.is_dir():
            raise ConfigError(f"{where}: {outbox} is a folder; name the journal's file in it")
        if not above.is_dir():
            raise ConfigError(f"{where}: {above} is not a folder")
        return
    path = Path(value)
    if name == "detector.cascade":
        try:
            path = find_cascade(value)
        except DetectorError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if not path.is_file():
        raise ConfigError(f"{where}: file not found: {path}")


def _where(config: Config, name: str) -> str:
    return config.origins.get(name, "defaults")


def describe() -> list[tuple[str, Any, str, str]]:
    """(key, default, environment variable, meaning) for every setting: the docs and the example file."""
    rows = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            env = f"{ENV_PREFIX}{section.upper()}_{f.name.upper()}"
            rows.append((f"{section}.{f.name}", f.default, env, _meaning(f)))
    return rows


def _meaning(f: dataclasses.Field) -> str:
    """The key's doc with the values it accepts, as the checker enforces them."""
    lo, hi, choices, longest = (f.metadata[k] for k in ("lo", "hi", "choices", "longest"))
    if choices:
        return f"{f.metadata['doc']} (one of {', '.join(f'`{c}`' for c in choices)})"
    if lo is not None:
        return f"{f.metadata['doc']} ({_num(lo)}..{_num(hi)})"
    if longest is not None:
        return f"{f.metadata['doc']} (at most {longest} bytes)"
    return f.metadata["doc"]


def to_toml(config: Config) -> str:
    """The effective settings as TOML (password masked), for ``check-config --show``. A derived setting
    the user left empty stays empty, its value in a comment: the output copied to another Pi must not give
    both one device id or one client id."""
    lines: list[str] = []
    for section in SECTIONS:
        lines.append(f"[{section}]")
        for f in dataclasses.fields(getattr(config, section)):
            value = getattr(getattr(config, section), f.name)
            if f.name == "password" and value:
                value = "********"
            if f"{section}.{f.name}" in config.derived:
                lines.append(f'{f.name} = ""  # here: {_toml_value(value)}')
                continue
            lines.append(f"{f.name} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# What the generated files say around the keys; the keys themselves come from the dataclasses above.
REFERENCE_DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
EXAMPLE_FILE = Path(__file__).resolve().parent.parent / "config.example.toml"
REFERENCE_BEGIN = "<!-- generated by `python -m edge.config --write`: edit edge/config.py, not this table -->"
REFERENCE_END = "<!-- end of generated table -->"
EXAMPLE_HEADER = """\
# emotion-edge settings. setup.sh installs this file as /etc/emotion-edge/config.toml.
# Generated from edge/config.py by `python -m edge.config --write`; docs/configuration.md explains it.
#
# Every key is listed with its default, so the file works as it is. Change what you need, then run
#     emotion-edge check-config /etc/emotion-edge/config.toml
# and restart the service (sudo systemctl restart emotion-edge).
#
# Any key can also be set from the environment as EMOTION_EDGE_<SECTION>_<KEY>, for example
# EMOTION_EDGE_MQTT_HOST=broker.lan (in a systemd drop-in). Flags beat the environment, which beats
# this file. Unknown keys and bad values stop the service with a message naming the key.
# Use absolute paths for files.
"""


def reference_table() -> str:
    """The Markdown table of every key, for docs/configuration.md."""
    rows = ["| key | default | environment variable | meaning |", "| --- | --- | --- | --- |"]
    for key, default, env, meaning in describe():
        rows.append(f"| `{key}` | `{_toml_value(default)}` | `{env}` | {meaning} |")
    return "\n".join(rows) + "\n"


def example_toml() -> str:
    """config.example.toml: every section and key at its default, each with its meaning as a comment."""
    out = [EXAMPLE_HEADER]
    for section, cls in SECTIONS.items():
        out.append(f"\n[{section}]\n# {cls.__doc__}\n")
        for f in dataclasses.fields(cls):
            meaning = _meaning(f).replace("`", "")
            out.extend(f"# {line}\n" for line in textwrap.wrap(meaning, 98))
            out.append(f"{f.name} = {_toml_value(f.default)}\n")
    return "".join(out)


def with_reference(doc: str) -> str:
    """``doc`` (docs/configuration.md's text) with its generated table replaced by the current one."""
    head, found, rest = doc.partition(REFERENCE_BEGIN + "\n")
    _old, found_end, tail = rest.partition(REFERENCE_END)
    if not (found and found_end):
        raise ValueError(f"{REFERENCE_DOC}: the markers around the generated table are missing")
    return f"{head}{REFERENCE_BEGIN}\n{reference_table()}{REFERENCE_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """``python -m edge.config --write``: regenerate the docs table and the example file after changing a key;
    ``--check`` fails (exit 1) when either is out of date, as CI's tests do."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m edge.config", description=main.__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the stale files (default: only check)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a file is out of date (the default)")
    args = parser.parse_args(argv)
    wanted = {REFERENCE_DOC: with_reference(REFERENCE_DOC.read_text()), EXAMPLE_FILE: example_toml()}
    stale = [path for path, text in wanted.items() if path.read_text() != text]
    if args.write:
        for path in stale:
            path.write_text(wanted[path])
            print(f"wrote {path}")
        return 0
    for path in stale:
        print(f"{path}: out of date; run python -m edge.config --write", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
