"""Deployment checks: setup.sh, the systemd unit and its sandbox, CI and README in step.

These run the real tools (bash, shellcheck, systemd-analyze, libseccomp) on the real files; setup.sh --dev
installs every one of them, and .ci/run fails a run where a test here was skipped for a missing tool.
setup.sh itself changes the machine (apt, /opt, /etc, a user), so its full runs are checked by hand and in
the emulated arm64 root (README, "Checked on 64-bit Arm"), not here.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import tomllib
from helpers import MOSQUITTO, edge_command, free_port, port_open, wait_until

from edge.config import load

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "setup.sh"
CI = ROOT / ".ci" / "run"
UNIT = ROOT / "systemd" / "emotion-edge.service"
README = ROOT / "README.md"
DEMO_CLIP = ROOT / "edge" / "tools" / "demo.mp4"
SECURITY_LIMIT = 4.0


def tool(name: str) -> str:
    """The tool's path, or a skip that .ci/run turns into a failure (setup.sh --dev must install it)."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (./setup.sh --dev installs it)")
    return path


def entry_point() -> Path:
    """The console script the unit runs, from the venv running these tests."""
    script = Path(sys.executable).parent / "emotion-edge"
    assert script.exists(), f"{script} missing: install the project into this venv (./setup.sh --dev)"
    return script


def setup_constant(name: str) -> str:
    """A ``readonly NAME=value`` from setup.sh, with $OTHER constants expanded."""
    text = SETUP.read_text()
    match = re.search(rf"^readonly {name}=(\S+)$", text, re.M)
    assert match, f"setup.sh defines no readonly {name}"
    return re.sub(r"\$(\w+)", lambda m: setup_constant(m.group(1)), match.group(1))


def unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)  # repeated keys: last wins
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read(UNIT)
    return parser


def readme_command(marker: str) -> str:
    """The line after ``<!-- marker -->`` that is not a code fence, as .ci/run reads it."""
    lines = README.read_text().splitlines()
    index = lines.index(f"<!-- {marker} -->")
    return next(line for line in lines[index + 1 :] if not line.startswith("```"))


def test_sync_app_copies_the_runtime_without_the_float_weights_and_only_once(tmp_path: Path) -> None:
    """setup.sh's sync_app run on its own, with ``as_root`` as a plain call and the app folder in
    tmp_path: the Pi gets the .tflite and its card but not the 16 MB of training weights, and a
    second run finds nothing to copy (so setup.sh does not restart the service for nothing)."""
    script = f"""
        set -eu
        CHECKOUT={ROOT}; APP={tmp_path}/app
        APP_FILES=(edge models pyproject.toml README.md config.example.toml)
        as_root() {{ "$@"; }}; changed() {{ echo "changed: $*"; }}; die() {{ echo "die: $*"; exit 1; }}
        eval "$(sed -n '/^sync_app() {{/,/^}}/p' {SETUP})"
        sync_app; echo ---; sync_app
    """
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.split("---")
    assert "changed: copied the runtime" in first and second.strip() == ""
    models = {p.name for p in (tmp_path / "app" / "models").iterdir()}
    assert {"emotion_int8.tflite", "emotion_int8.json"} <= models
    assert (ROOT / "models" / "emotion_float.keras").exists() and "emotion_float.keras" not in models


def test_setup_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SETUP)], check=True)


def test_shell_scripts_pass_shellcheck() -> None:
    result = subprocess.run([tool("shellcheck"), str(SETUP), str(CI)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_setup_rejects_an_unknown_option_before_changing_anything() -> None:
    result = subprocess.run([str(SETUP), "--turbo"], capture_output=True, text=True)
    assert result.returncode == 1
    assert "setup: error: unknown option: --turbo" in result.stderr
    assert "--edge" in result.stderr  # the usage follows


def test_setup_help_names_every_mode() -> None:
    result = subprocess.run([str(SETUP), "--help"], capture_output=True, text=True, check=True)
    for mode in ("--edge", "--train", "--dev"):
        assert mode in result.stdout


def run_setup_copy(tmp_path: Path, env: dict[str, str], wrap: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``setup.sh --dev`` from a bare copy of the checkout, so pip would have work to do.

    Each caller makes one pre-flight check fail; the apt step before those checks only installs what is
    missing, so with setup.sh --dev's packages present nothing on the machine changes.
    """
    for package in ("python3", "python3-venv"):
        status = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", package], capture_output=True, text=True)
        if status.stdout != "installed":
            pytest.skip(f"{package} not installed (./setup.sh --dev installs it)")
    for name in ("setup.sh", "pyproject.toml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    command = [*wrap, str(tmp_path / "setup.sh"), "--dev"]
    result = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert not (tmp_path / ".venv").exists(), "a failed pre-flight check must change nothing"
    return result


def test_setup_stops_early_without_the_package_index(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on: connection refused at once
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/simple/"
    result = run_setup_copy(tmp_path, {"PIP_INDEX_URL": url})
    assert result.returncode == 1
    assert f"setup: error: cannot reach the Python package index {url}" in result.stderr


def test_setup_refuses_a_python_older_than_3_9(tmp_path: Path) -> None:
    python = tmp_path / "python3.8"
    python.write_text('#!/bin/sh\ncase "$*" in *version_info*) exit 1 ;; *) echo 3.8.18 ;; esac\n')
    python.chmod(0o755)
    result = run_setup_copy(tmp_path, {"PYTHON": str(python)})
    assert result.returncode == 1
    assert f"setup: error: {python} is Python 3.8.18: emotion-edge needs Python 3.9 or newer" in result.stderr


@pytest.mark.parametrize(
    ("os_release", "message"),
    [
        (
            'PRETTY_NAME="Fedora Linux 40"\nID=fedora\nVERSION_ID=40\n',
            "unsupported OS Fedora Linux 40: setup.sh needs apt",
        ),
        ('PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\nID=debian\nVERSION_ID="11"\n', "needs Debian 12 (bookworm)"),
    ],
)
def test_setup_refuses_an_unsupported_os(tmp_path: Path, os_release: str, message: str) -> None:
    """/etc/os-release is swapped in a private mount namespace (root only: CI runs as root)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a private mount namespace")
    fake = tmp_path / "os-release"
    fake.write_text(os_release)
    swap = f'mount --bind {fake} /etc/os-release && exec "$@"'
    result = run_setup_copy(tmp_path, {}, ("unshare", "--mount", "--propagation", "private", "sh", "-c", swap, "sh"))
    assert result.returncode == 1
    assert "setup: error: " in result.stderr and message in result.stderr


def setup_function(call: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run one of setup.sh's functions: sourced, the script only defines them."""
    return subprocess.run(
        ["bash", "-c", f'source "$1" && {call}', "bash", str(SETUP)], input=stdin, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("config", "broker", "local"),
    [
        ("", "localhost 1883", True),  # the defaults: mosquitto on the Pi
        ('[mqtt]\nhost = "127.0.0.1"\nport = 1884\n', "127.0.0.1 1884", True),
        ('[mqtt]\nhost = "broker.lan"\nport = 8883\n', "broker.lan 8883", False),  # no mosquitto then
    ],
)
def test_setup_installs_mosquitto_only_for_a_local_broker(config: str, broker: str, local: bool) -> None:
    result = setup_function(f"broker_of {sys.executable}", config)
    assert result.stdout.split() == broker.split(), result.stderr
    host = broker.split()[0]
    assert (setup_function(f"is_local_host {host}").returncode == 0) is local


def test_unit_runs_what_setup_installs() -> None:
    service = unit()["Service"]
    venv, config = setup_constant("SERVICE_VENV"), setup_constant("CONFIG")
    assert service["ExecStart"] == f"{venv}/bin/emotion-edge run --config {config}"
    assert service["User"] == setup_constant("SERVICE_USER")
    assert service["Type"] == "notify"
    assert service["Restart"] == "on-failure"
    assert "StartLimitBurst" in unit()["Unit"]
    assert "video" in service["SupplementaryGroups"].split()
    assert service["DevicePolicy"] == "closed"
    assert "char-video4linux rw" in UNIT.read_text()


def test_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze verify checks every directive; ExecStart points at this venv's script, which exists."""
    copy = tmp_path / UNIT.name
    text = UNIT.read_text()
    copy.write_text(text.replace(f"{setup_constant('SERVICE_VENV')}/bin/emotion-edge", str(entry_point())))
    result = subprocess.run([tool("systemd-analyze"), "verify", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout + result.stderr, result.stdout + result.stderr


def test_unit_exposure_is_low_and_the_install_docs_say_so() -> None:
    result = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for emotion-edge\.service: (\d+\.\d)", result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match.group(1))
    assert score <= SECURITY_LIMIT
    install_doc = ROOT / "docs" / "install.md"
    assert f"exposure level **{score}**" in install_doc.read_text(), f"docs/install.md must state the measured {score}"


def test_ci_runs_the_readme_commands() -> None:
    result = subprocess.run(
        ["bash", str(CI)], env={**os.environ, "CI_PRINT_COMMANDS": "1"}, capture_output=True, text=True, check=True
    )
    commands = result.stdout.splitlines()
    assert commands == [readme_command("setup-command"), readme_command("test-command")]
    assert commands[0].startswith("./setup.sh --dev && ")
    assert commands[1].startswith(".venv/bin/python -m pytest")
    top = "\n".join(README.read_text().splitlines()[:40])
    assert all(command in top for command in commands), "the two commands belong at the top of README.md"


def test_example_config_passes_check_config() -> None:
    result = subprocess.run(
        [str(entry_point()), "check-config", str(ROOT / "config.example.toml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# The unit's SystemCallFilter= and MemoryDenyWriteExecute=, applied with libseccomp the way systemd 252 does
# (two stacked filters; denied calls fail with EPERM as SystemCallErrorNumber=EPERM says), before exec'ing
# the command. Runs under Debian's python3, which has the python3-seccomp binding.
SANDBOX = r"""
import errno, os, subprocess, sys
import seccomp

listing = subprocess.run(["systemd-analyze", "syscall-filter"], check=True, capture_output=True, text=True).stdout
groups = {}
for line in listing.splitlines():
    if line.startswith("@"):
        members = groups[line.split()[0]] = []
    elif line.strip() and not line.strip().startswith("#") and line.startswith(" "):
        members.append(line.strip())

def expand(names):
    return set().union(*(expand(groups[n]) if n.startswith("@") else {n} for n in names))

def rule(syscall_filter, action, name, *args):
    try:
        syscall_filter.add_rule(action, name, *args)
    except (RuntimeError, ValueError, OSError):  # no such system call on this architecture
        pass

PROT_WRITE, PROT_EXEC, SHM_EXEC = 2, 4, 0o100000
eperm = seccomp.ERRNO(errno.EPERM)
mdwe = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
for name in ("mmap", "mmap2"):
    rule(mdwe, eperm, name, seccomp.Arg(2, seccomp.MASKED_EQ, PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC))
for name in ("mprotect", "pkey_mprotect"):
    rule(mdwe, eperm, name, seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, PROT_EXEC))
rule(mdwe, eperm, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, SHM_EXEC, SHM_EXEC))
mdwe.load()
allowed = seccomp.SyscallFilter(defaction=eperm)
for name in expand(sys.argv[1].split()) - expand(sys.argv[2].split()):
    rule(allowed, seccomp.ALLOW, name)
allowed.load()
os.execv(sys.argv[3], sys.argv[3:])
"""


def run_sandboxed(*command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` under the unit's system-call filter and W^X rule."""
    python = "/usr/bin/python3"
    check = subprocess.run([python, "-c", "import seccomp"], capture_output=True)
    if check.returncode != 0:
        pytest.skip("python3-seccomp not installed (./setup.sh --dev installs it)")
    tool("systemd-analyze")
    lines = UNIT.read_text().splitlines()
    filters = [line.split("=", 1)[1] for line in lines if line.startswith("SystemCallFilter=")]
    allow = " ".join(f for f in filters if not f.startswith("~"))
    deny = " ".join(f[1:] for f in filters if f.startswith("~"))
    assert allow and "MemoryDenyWriteExecute=yes" in lines
    return subprocess.run(
        [python, "-c", SANDBOX, allow, deny, *command], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_sandbox_refuses_writable_executable_memory() -> None:
    """The control: without it a passing pipeline run below would prove nothing."""
    code = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"
    result = run_sandboxed(sys.executable, "-c", code)
    assert result.returncode != 0
    assert "PermissionError" in result.stderr


def test_pipeline_runs_inside_the_unit_sandbox() -> None:
    """numpy, OpenCV and the TFLite interpreter with XNNPACK work without W+X memory or extra system calls."""
    result = run_sandboxed(str(entry_point()), "analyze", str(DEMO_CLIP))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip(), "analyze printed nothing"


def setup_functions(*names: str) -> str:
    """The text of setup.sh's functions ``names``, to eval in a script with paths of the test's own."""
    text = SETUP.read_text()
    found = [re.search(rf"^{name}\(\) {{\n.*?^}}\n", text, re.M | re.S) for name in names]
    assert all(found), [n for n, f in zip(names, found) if not f]
    return "\n".join(f.group(0) for f in found if f)


STUBS = (
    'as_root() { "$@"; }; changed() { echo "changed: $*"; }; die() { echo "die: $*"; exit 1; }; log() { echo "$*"; }'
)


def run_bash(script: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], input=stdin, capture_output=True, text=True, timeout=60)


def test_mqtt_host_writes_the_broker_into_the_config_and_keeps_its_comments(tmp_path: Path) -> None:
    """``--mqtt-host/--mqtt-port/--mqtt-user``: set_mqtt on a copy of the shipped config; the password comes
    on stdin (quotes and backslashes included) and lands only in the file, which stays 0640."""
    config = tmp_path / "config.toml"
    shutil.copy(ROOT / "config.example.toml", config)
    config.chmod(0o644)
    script = f"""
        set -eu
        CONFIG={config}; SERVICE_USER=$(id -gn); PYTHON=/usr/bin/python3
        {STUBS}
        eval "$(cat <<'FUNCTIONS'
{setup_functions("set_mqtt")}
FUNCTIONS
)"
        IFS= read -r password
        set_mqtt broker.lan 8883 pi <<<"$password"; echo ---
        set_mqtt broker.lan 8883 pi <<<"$password"
    """
    secret = 'p"a\\ss w\u00e9rd'
    done = run_bash(script, secret + "\n")
    assert done.returncode == 0, done.stdout + done.stderr
    first, second = done.stdout.split("---")
    assert "changed: wrote the broker broker.lan:8883 (user pi)" in first and second.strip() == ""
    assert secret not in done.stdout + done.stderr, "the password is never shown"
    settings = tomllib.loads(config.read_text())["mqtt"]
    assert (settings["host"], settings["port"], settings["username"], settings["password"]) == (
        "broker.lan",
        8883,
        "pi",
        secret,
    )
    example = (ROOT / "config.example.toml").read_text().splitlines()
    assert len(config.read_text().splitlines()) == len(example), "values replaced in place, comments kept"
    assert config.stat().st_mode & 0o777 == 0o640
    assert load(config, env={}).mqtt.host == "broker.lan"


def test_a_changed_broker_counts_as_a_change_so_the_service_restarts(tmp_path: Path) -> None:
    """setup.sh restarts the service only when ``changes`` grew; a change counted in a pipe's subshell is lost."""
    config = tmp_path / "config.toml"
    shutil.copy(ROOT / "config.example.toml", config)
    script = f"""
        set -eu
        CONFIG={config}; SERVICE_USER=$(id -gn); PYTHON=/usr/bin/python3; changes=0
        as_root() {{ "$@"; }}; die() {{ echo "die: $*"; exit 1; }}; log() {{ :; }}
        eval "$(cat <<'FUNCTIONS'
{setup_functions("changed", "set_mqtt")}
FUNCTIONS
)"
        set_mqtt broker.lan 1883 "" <<<""
        echo "changes=$changes"
    """
    done = run_bash(script)
    assert done.returncode == 0 and done.stdout.strip().endswith("changes=1"), done.stdout + done.stderr
    piped = [line for line in SETUP.read_text().splitlines() if re.search(r"\|\s*set_mqtt\b", line)]
    assert piped == [], "set_mqtt fed by a pipe runs in a subshell: its change is not counted"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--mqtt-port", "1884"], "--mqtt-port and --mqtt-user need --mqtt-host"),
        (["--mqtt-host", "h", "--broker-lan"], "choose one: --mqtt-host"),
        (["--mqtt-host", "h", "--mqtt-port", "http"], "--mqtt-port: expected a port number 1..65535, got 'http'"),
        (["--mqtt-host"], "--mqtt-host needs a value"),
        (["--dev", "--broker-lan"], "--mqtt-host, --mqtt-port, --mqtt-user and --broker-lan are for the Pi"),
    ],
)
def test_setup_refuses_bad_broker_flags_before_changing_anything(flags: list[str], message: str) -> None:
    result = subprocess.run([str(SETUP), *flags], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 1 and f"setup: error: {message}" in result.stderr, result.stderr


def test_setup_help_names_the_broker_flags() -> None:
    result = subprocess.run([str(SETUP), "--help"], capture_output=True, text=True, check=True)
    for flag in ("--mqtt-host", "--mqtt-port", "--mqtt-user", "--broker-lan", "--uninstall"):
        assert flag in result.stdout


REFUSED = (4, 5, 134, 135)


def mqtt_refusal(port: int, user: str | None = None, password: str | None = None) -> int:
    """The CONNACK reason code: 0 accepted; paho reports a refusal in MQTT 5 codes (134 bad user name or
    password, 135 not authorised)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    if user:
        client.username_pw_set(user, password)
    codes: list[int] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: codes.append(reason.value)
    client.connect("127.0.0.1", port)
    deadline = time.monotonic() + 10
    while not codes and time.monotonic() < deadline:
        client.loop(0.1)
    client.disconnect()
    assert codes, "no CONNACK"
    return codes[0]


def test_broker_lan_makes_a_password_protected_mosquitto_and_prints_what_home_assistant_needs(tmp_path: Path) -> None:
    """setup_broker_lan with its files in tmp_path, then a real mosquitto run on what it wrote: anonymous
    clients are refused, the printed Home Assistant credentials and the service's (in the config) work,
    and a second run changes nothing and prints the same password."""
    if os.geteuid() != 0 or not shutil.which("mosquitto_passwd"):
        pytest.skip("needs root (files owned by group mosquitto) and mosquitto_passwd")
    config = tmp_path / "config.toml"
    shutil.copy(ROOT / "config.example.toml", config)
    port = free_port()
    script = f"""
        set -eu
        CONFIG={config}; SERVICE_USER=emotion-edge; PYTHON=/usr/bin/python3; HA_MQTT_USER=homeassistant
        BROKER_CONF={tmp_path}/conf.d/emotion-edge.conf; BROKER_PASSWD={tmp_path}/emotion-edge.passwd
        BROKER_NOTE={tmp_path}/broker-lan.txt; BROKER_PORT={port}
        {STUBS}
        apt_install() {{ :; }}; ensure_mosquitto() {{ :; }}; restart_mosquitto() {{ echo restarted; }}
        eval "$(cat <<'FUNCTIONS'
{setup_functions("set_mqtt", "new_password", "setup_broker_lan")}
FUNCTIONS
)"
        setup_broker_lan; echo ---; setup_broker_lan
    """
    group = subprocess.run(["getent", "group", "emotion-edge"], capture_output=True)
    if group.returncode != 0:
        script = script.replace("SERVICE_USER=emotion-edge", "SERVICE_USER=root")
    done = run_bash(script)
    assert done.returncode == 0, done.stdout + done.stderr
    first, second = done.stdout.split("---")
    assert "changed: made passwords" in first and "restarted" in first
    assert "changed:" not in second and "restarted" not in second, second
    passwords = [re.search(r"Password: (\S+)", part).group(1) for part in (first, second)]  # type: ignore[union-attr]
    assert passwords[0] == passwords[1] and len(passwords[0]) >= 20
    assert f"Port:     {port}" in first and "Username: homeassistant" in first
    assert (tmp_path / "broker-lan.txt").stat().st_mode & 0o777 == 0o600
    assert passwords[0] not in (tmp_path / "emotion-edge.passwd").read_text(), "the password file is hashed"

    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"user root\npersistence false\n{(tmp_path / 'conf.d' / 'emotion-edge.conf').read_text()}")
    assert MOSQUITTO is not None
    process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(port), 10, "mosquitto on the generated configuration")
        assert mqtt_refusal(port) in REFUSED, "anonymous clients are refused"
        assert mqtt_refusal(port, "homeassistant", "wrong") in REFUSED
        assert mqtt_refusal(port, "homeassistant", passwords[0]) == 0
        service = tomllib.loads(config.read_text())["mqtt"]
        assert (service["host"], service["port"]) == ("localhost", port)
        assert mqtt_refusal(port, service["username"], service["password"]) == 0
    finally:
        process.terminate()
        process.wait(10)


def test_uninstall_removes_the_service_and_leaves_no_retained_topic_of_the_device(
    tmp_path: Path, broker, subscribe, edge_env: dict[str, str]
) -> None:
    """uninstall with the installation's paths in tmp_path, after a real service run left its retained
    topics and discovery on a real broker: the files go, the user goes, and the broker keeps nothing."""
    run = subprocess.run(
        edge_command("run", "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port), "--device-id", "testpi",
                     "--source", str(DEMO_CLIP), "--max-frames", "20"),
        env=edge_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    seen = subscribe(broker.port, ["#"])
    wait_until(lambda: len([m for m in seen.messages if m.retain]) >= 5, 10, "the service's retained topics")

    prefix, etc, state = tmp_path / "opt", tmp_path / "etc" / "emotion-edge", tmp_path / "var-lib"
    (prefix / "venv" / "bin").mkdir(parents=True)
    etc.mkdir(parents=True)
    state.mkdir()
    (state / "enabled").write_text("ON\n")
    entry = prefix / "venv" / "bin" / "emotion-edge"
    entry.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m edge "$@"\n')
    entry.chmod(0o755)
    (etc / "config.toml").write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ndevice_id = "testpi"\n')
    unit_file = tmp_path / "emotion-edge.service"
    unit_file.write_text("[Unit]\n")
    script = f"""
        set -eu
        UNIT={unit_file}; PREFIX={prefix}; SERVICE_VENV={prefix}/venv; CONFIG={etc}/config.toml
        STATE_DIR={state}; SERVICE_USER=emotion-edge-test
        BROKER_CONF={tmp_path}/none.conf; BROKER_PASSWD={tmp_path}/none.passwd
        {STUBS}
        systemd_running() {{ return 1; }}; restart_mosquitto() {{ echo restarted; }}
        id() {{ [ "$2" = emotion-edge-test ]; }}; userdel() {{ echo "userdel $*"; }}
        eval "$(cat <<'FUNCTIONS'
{setup_functions("uninstall")}
FUNCTIONS
)"
        uninstall
    """
    done = run_bash(script)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "changed: cleared the device's retained topics" in done.stdout, done.stdout + done.stderr
    assert "userdel emotion-edge-test" in done.stdout
    assert not any(p.exists() for p in (unit_file, prefix, etc, state))
    after = subscribe(broker.port, ["#"])
    time.sleep(1.0)  # a fresh subscriber receives every retained message at once
    assert [m.topic for m in after.messages if m.retain] == []
