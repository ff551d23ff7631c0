"""The command line as a user runs it (``python -m edge …`` in a subprocess): exit codes, one-line errors,
and the subcommands that delegate to analyze/bench (and the machine line bench prints), and the demo."""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import REPO, Broker, Subscriber, edge_command, free_port, make_pki, port_open, refusing_subscriptions

from edge.cli import EX_CONFIG
from edge.tools import bench
from edge.tools.demo import DEMO_CLIP

FIXTURES = REPO / "tests" / "fixtures" / "media"


def edge(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(edge_command(*args), env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in f" {line}"]


def test_check_config_accepts_the_example_and_shows_effective_settings(edge_env: dict[str, str]) -> None:
    result = edge(edge_env, "check-config", "config.example.toml", "--show")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config.example.toml: OK\n")
    assert '[mqtt]\nhost = "localhost"\nport = 1883\n' in result.stdout


def test_bad_config_stops_check_and_run_with_one_line_naming_the_key(edge_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text('[mqtt]\nport = "abc"\n')
    for command in (["check-config", str(bad)], ["run", "--config", str(bad)]):
        result = edge(edge_env, *command)
        assert result.returncode == EX_CONFIG, result.stderr
        assert error_lines(result.stderr) == [
            error_lines(result.stderr)[0].split("ERROR ")[0] + "ERROR config.toml: mqtt.port: "
            "expected an integer 1..65535, got 'abc'"
        ]
    # Flags are checked the same way.
    result = edge(edge_env, "run", "--mqtt-port", "70000")
    assert result.returncode == EX_CONFIG
    assert "command line: mqtt.port: expected an integer 1..65535, got 70000" in result.stderr
    # And environment variables.
    result = edge({**edge_env, "EMOTION_EDGE_MQTT_QOS": "3"}, "check-config")
    assert result.returncode == EX_CONFIG
    assert "EMOTION_EDGE_MQTT_QOS: mqtt.qos: expected an integer 0..2, got 3" in result.stderr


def test_unusable_inputs_are_named_and_fatal(edge_env: dict[str, str], tmp_path: Path) -> None:
    result = edge(edge_env, "run", "--source", str(tmp_path / "missing.mp4"), "--mqtt-port", str(free_port()))
    assert result.returncode == 1
    assert len(error_lines(result.stderr)) == 1 and "missing.mp4" in error_lines(result.stderr)[0]

    corrupt = tmp_path / "model.tflite"
    corrupt.write_bytes(b"not a model")
    result = edge({**edge_env, "EMOTION_EDGE_CLASSIFIER_MODEL": str(corrupt)}, "run", "--source", "x")
    assert result.returncode == 1
    assert len(error_lines(result.stderr)) == 1 and "model" in error_lines(result.stderr)[0]


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_watch_refuses_a_refresh_that_is_no_positive_number_of_seconds(
    edge_env: dict[str, str], tmp_path: Path, value: str
) -> None:
    result = edge(edge_env, "watch", "--refresh", value, "--db", str(tmp_path / "w.db"), timeout=30)
    assert result.returncode == 2, result.stderr
    assert f"--refresh: expected a number of seconds above 0, got {value!r}" in result.stderr
    assert not (tmp_path / "w.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [  # 100000 threads crashed the interpreter, 10**20 frames hung the bench before its first line
        (["--classifier", "--threads", "100000"], "argument --threads: expected a whole number 1..64, got '100000'"),
        (["--frames", "1" + "0" * 400], "argument --frames: expected a whole number 1..100000, got '1" + "0" * 400),
        (["--classifier", "--faces", "0"], "argument --faces/--n: expected a whole number 1..100000, got '0'"),
    ],
)
def test_bench_refuses_counts_it_cannot_time_in_a_usage_line(edge_env: dict[str, str], args, message) -> None:
    result = edge(edge_env, "bench", *args, timeout=30)
    assert result.returncode == 2 and message in result.stderr.splitlines()[-1], result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "other.tflite"], "--model applies to --classifier; the pipeline takes [classifier] from --config"),
        (["--threads", "2", "--backend", "tensorflow"], "--backend, --threads apply to --classifier; the pipeline"),
        (
            ["--classifier", "--frames", "50", "clip.mp4"],
            "SRC, --frames apply to the pipeline's bench, not --classifier",
        ),
    ],
)
def test_bench_refuses_an_option_of_the_other_bench_it_would_not_apply(edge_env: dict[str, str], args, message) -> None:
    result = edge(edge_env, "bench", *args, timeout=30)
    assert result.returncode == 2 and result.stdout == "", result.stdout
    [line] = error_lines(result.stderr)
    assert f"ERROR bench: {message}" in line, result.stderr


def test_a_config_file_that_is_not_utf8_is_one_line_and_exit_78(edge_env: dict[str, str], tmp_path: Path) -> None:
    latin1 = tmp_path / "config.toml"
    latin1.write_bytes('[mqtt]\nhost = "café.lan"\n'.encode("latin-1"))  # saved by an editor in Latin-1
    for command in (["check-config", str(latin1)], ["run", "--config", str(latin1)]):
        result = edge(edge_env, *command)
        assert result.returncode == EX_CONFIG, result.stderr
        assert result.stderr.strip().splitlines() == error_lines(result.stderr), "one line, no traceback"
        assert error_lines(result.stderr)[0].endswith("ERROR config.toml: not UTF-8 text (byte 18 is 0xe9)")


def test_check_config_loads_the_model_and_cascade_it_calls_ok(edge_env: dict[str, str], tmp_path: Path) -> None:
    """What check-config calls OK starts: a model whose bytes do not match its card fails here, as in run."""
    shipped = REPO / "models" / "emotion_int8.tflite"
    model = tmp_path / "emotion_int8.tflite"
    model.write_bytes(shipped.read_bytes()[:-1] + b"\0")  # one byte changed: the sha256 no longer matches
    (tmp_path / "emotion_int8.json").write_bytes(shipped.with_suffix(".json").read_bytes())
    result = edge({**edge_env, "EMOTION_EDGE_CLASSIFIER_MODEL": str(model)}, "check-config")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "OK" not in result.stdout
    assert len(error_lines(result.stderr)) == 1 and "does not match its card" in result.stderr
    cascade = tmp_path / "cascade.xml"
    cascade.write_text("<opencv_storage>not a cascade</opencv_storage>")
    result = edge({**edge_env, "EMOTION_EDGE_DETECTOR_CASCADE": str(cascade)}, "check-config")
    assert result.returncode != 0 and "OK" not in result.stdout
    assert len(error_lines(result.stderr)) == 1 and "cascade.xml" in error_lines(result.stderr)[0], result.stderr
    ok = edge(edge_env, "check-config")
    assert ok.returncode == 0 and ok.stdout.endswith(": OK\n"), ok.stderr
    assert "XNNPACK" not in ok.stderr, "the interpreter's start-up chatter is not shown"
    debug = edge(edge_env, "--log-level", "debug", "check-config")
    assert "DEBUG INFO: Created TensorFlow Lite XNNPACK delegate for CPU." in debug.stderr, "but kept at debug"


def test_check_config_opens_a_file_source_as_run_does_and_leaves_cameras_alone(
    edge_env: dict[str, str], tmp_path: Path
) -> None:
    """What check-config calls OK starts: a missing clip or a lone photo fails here, as in run; a camera
    spec is not opened (the service may hold the camera), so a machine without one still checks OK."""
    photo = REPO / "tests" / "fixtures" / "media" / "one_face.jpg"
    cases = {
        str(tmp_path / "gone.mp4"): f"{tmp_path / 'gone.mp4'}: no such file, folder or camera",
        str(photo): f"{photo}: 1 still frame, and a face is published once seen in tracker.min_hits (2) frames",
    }
    for spec, message in cases.items():
        result = edge({**edge_env, "EMOTION_EDGE_SOURCE_SPEC": spec}, "check-config")
        assert result.returncode == 1 and "OK" not in result.stdout, result.stdout + result.stderr
        assert len(error_lines(result.stderr)) == 1 and message in result.stderr, result.stderr
    for spec in (str(DEMO_CLIP), "/dev/video9", "rtsp://camera.invalid/stream"):
        ok = edge({**edge_env, "EMOTION_EDGE_SOURCE_SPEC": spec}, "check-config")
        assert ok.returncode == 0 and ok.stdout.endswith(": OK\n"), (spec, ok.stderr)
    looped = edge({**edge_env, "EMOTION_EDGE_SOURCE_SPEC": str(photo), "EMOTION_EDGE_SOURCE_LOOP": "1"}, "check-config")
    assert looped.returncode == 0, looped.stderr


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")
def test_check_config_loads_the_tls_files_and_names_the_one_that_is_wrong(
    edge_env: dict[str, str], tmp_path: Path
) -> None:
    pki = make_pki(tmp_path)
    tls = {"EMOTION_EDGE_MQTT_TLS_CA": str(pki["ca.crt"]), "EMOTION_EDGE_MQTT_TLS_CERT": str(pki["client.crt"]),
           "EMOTION_EDGE_MQTT_TLS_KEY": str(pki["client.key"])}  # fmt: skip
    ok = edge({**edge_env, **tls}, "check-config")
    assert ok.returncode == 0 and ok.stdout.endswith(": OK\n"), ok.stderr
    not_a_ca = {**tls, "EMOTION_EDGE_MQTT_TLS_CA": str(pki["client.key"])}
    wrong_key = {**tls, "EMOTION_EDGE_MQTT_TLS_KEY": str(pki["server.key"])}  # a key, but not the certificate's
    for env, line in (
        (not_a_ca, f"mqtt.tls_ca: {pki['client.key']}: not a CA certificate file ("),
        (wrong_key, f"mqtt.tls_cert/mqtt.tls_key: {pki['client.crt']} and {pki['server.key']}: not a client "
                    "certificate and its key ("),
    ):  # fmt: skip
        for command in (["check-config"], ["run", "--mqtt-port", str(free_port())]):
            result = edge({**edge_env, **env}, *command)
            assert result.returncode == EX_CONFIG, result.stderr
            errors = error_lines(result.stderr)
            assert len(errors) == 1 and line in errors[0], result.stderr


def test_logs_are_plain_lines(edge_env: dict[str, str], tmp_path: Path) -> None:
    result = edge(edge_env, "--log-level", "debug", "check-config", "/nonexistent.toml")
    assert "\x1b[" not in result.stderr
    assert error_lines(result.stderr) == [error_lines(result.stderr)[0]]
    # Under systemd the journal stamps the time, so lines start with the level.
    journald = edge({**edge_env, "JOURNAL_STREAM": "8:1234"}, "check-config", "/nonexistent.toml")
    assert journald.stderr.startswith("ERROR /nonexistent.toml: config file not found")


def test_analyze_delegates_and_keeps_stdout_to_json_lines(edge_env: dict[str, str]) -> None:
    result = edge(edge_env, "analyze", str(FIXTURES / "three_faces.jpg"), "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 1 and {"frame", "ts", "faces"} <= set(records[0])
    assert records[0]["faces"], "the fixture has faces"


def test_bench_delegates_and_prints_figures(edge_env: dict[str, str]) -> None:
    result = edge(edge_env, "bench", "--frames", "10")
    assert result.returncode == 0, result.stderr
    assert "fps" in result.stdout


def test_bench_classifier_prints_the_model_the_reframing_cost_and_the_machine(edge_env: dict[str, str]) -> None:
    result = edge(edge_env, "bench", "--classifier", "--faces", "20")
    assert result.returncode == 0, result.stderr
    model, loose, machine = result.stdout.splitlines()
    assert machine.startswith(f"machine: {platform.machine()}, ") and "int8 features: " in machine
    assert "ms/face median" in model and "20 faces of" in model and "budget" in model
    assert "crops 20% wider a side, reframed first" in loose
    assert float(loose.split()[0]) > 0 and float(model.split()[0]) > 0  # figures, compared by people, not by tests


PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU part\t: 0xd08

Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""
X86_CPUINFO = """processor\t: 0
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_bf16 amx_int8 amx_tile
"""


def test_the_machine_line_names_the_cpu_and_its_int8_features_best_first() -> None:
    pi = bench.machine(PI4_CPUINFO)
    assert "Raspberry Pi 4 Model B Rev 1.4" in pi and "int8 features: none," in pi
    xeon = bench.machine(X86_CPUINFO)
    assert "Xeon(R) Platinum 8481C" in xeon and "143" not in xeon
    assert "int8 features: amx_int8, avx512_vnni, avx2," in xeon


def demo_lines(stdout: str) -> list[tuple[str, str]]:
    pairs = [line.split(" ", 1) for line in stdout.splitlines()]
    assert all(len(pair) == 2 for pair in pairs), stdout
    return [(topic, payload) for topic, payload in pairs]


def test_demo_prints_what_a_subscriber_receives_and_leaves_nothing_retained(
    edge_env: dict[str, str], broker: Broker, subscribe: Callable[..., Subscriber]
) -> None:
    args = ("demo", "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port), "--device-id", "testpi")
    result = edge(edge_env, *args)
    assert result.returncode == 0, result.stderr
    lines = demo_lines(result.stdout)
    base = "emotion-edge/testpi-demo"
    assert lines[0] == (f"{base}/availability", "online") and lines[-1] == (f"{base}/availability", "offline")
    kinds = {json.loads(payload)["type"] for topic, payload in lines if topic == f"{base}/events"}
    assert {"start", "end"} <= kinds
    assert any(topic == f"{base}/stats" for topic, _ in lines)
    late = subscribe(broker.port, [f"{base}/#", "homeassistant/#"])
    late.client.publish("probe/x", "x", qos=1).wait_for_publish(5)
    assert [m.topic for m in late.messages if m.payload] == [], "the demo clears what it retained"


def test_demo_against_a_broker_that_refuses_it_says_why_in_one_line(
    edge_env: dict[str, str], broker_factory: Callable[..., Broker]
) -> None:
    broker = broker_factory(listener="allow_anonymous false").start()
    result = edge(edge_env, "demo", "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port), timeout=30)
    assert result.returncode == 1 and result.stdout == "", result.stdout
    assert [line.split(" ", 1)[1] for line in error_lines(result.stderr)] == [
        f"ERROR demo: broker 127.0.0.1:{broker.port} refused the connection: Not authorized"
    ], result.stderr


def test_demo_against_a_broker_that_refuses_its_subscription_says_so_in_one_line(
    edge_env: dict[str, str], broker_factory: Callable[..., Broker], tmp_path: Path
) -> None:
    broker = broker_factory(listener=refusing_subscriptions(tmp_path, ["homeassistant/status"])).start()
    result = edge(edge_env, "demo", "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port), timeout=30)
    assert result.returncode == 1 and result.stdout == "", result.stdout
    [line] = error_lines(result.stderr)  # MQTT 3.1.1's refusal has no reason: paho calls it "Unspecified error"
    assert re.search(
        rf"ERROR demo: broker 127\.0\.0\.1:{broker.port} refused the subscription to emotion-edge/[^/]+/#: ", line
    )


def test_demo_starts_its_own_broker_when_none_listens(edge_env: dict[str, str]) -> None:
    port = free_port()
    result = edge(edge_env, "demo", "--mqtt-host", "localhost", "--mqtt-port", str(port))
    assert result.returncode == 0, result.stderr
    assert "started mosquitto on port" in result.stderr
    assert any(topic.endswith("/events") for topic, _ in demo_lines(result.stdout))
    assert not port_open(port)
