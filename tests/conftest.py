"""Shared fixtures: a real mosquitto broker per test and subscribers recording what it carries (see
helpers.py). Tests that need the broker are skipped, saying why, where mosquitto is not installed."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import DEVICE, MOSQUITTO, REPO, Broker, ServiceProcess, Subscriber


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Make brokers (not started) on a given or free port; all are stopped at teardown."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto)")
    made: list[Broker] = []

    def make(port: int | None = None, *, persistent: bool = False, listener: str = "") -> Broker:
        made.append(Broker(tmp_path, port, persistent=persistent, listener=listener))
        return made[-1]

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def broker(broker_factory: Callable[..., Broker]) -> Broker:
    """A running broker of this test's own."""
    return broker_factory().start()


@pytest.fixture
def subscribe() -> Iterator[Callable[..., Subscriber]]:
    """``subscribe(port, [topic filters], durable_id=None)`` -> a connected Subscriber, closed at teardown."""
    made: list[Subscriber] = []

    def make(port: int, topics: list[str], durable_id: str | None = None) -> Subscriber:
        made.append(Subscriber(port, topics, durable_id))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture
def edge_env(tmp_path: Path) -> dict[str, str]:
    """Environment for service subprocesses: the repo importable, no stray config or systemd socket."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOTION_EDGE_") and k != "NOTIFY_SOCKET"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    env["EMOTION_EDGE_CONFIG"] = str(empty)  # never the machine's /etc/emotion-edge/config.toml
    return env


@pytest.fixture
def service(edge_env: dict[str, str]) -> Iterator[Callable[..., ServiceProcess]]:
    """``service(port, *flags, env=None)``: ``python -m edge run`` as DEVICE on 127.0.0.1:port, killed at teardown."""
    started: list[ServiceProcess] = []

    def start(port: int, *args: str, env: dict[str, str] | None = None) -> ServiceProcess:
        flags = ["--mqtt-host", "127.0.0.1", "--mqtt-port", str(port), "--device-id", DEVICE, *args]
        started.append(ServiceProcess(flags, {**edge_env, **(env or {})}))
        return started[-1]

    yield start
    for s in started:
        s.kill()
