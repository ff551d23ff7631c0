"""Config: defaults that work, precedence file < environment < flags, and one-line errors naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import locked_folder

from edge import config as cfg
from edge.config import ConfigError, load, tomllib

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_work_without_a_file(tmp_path: Path) -> None:
    c = load(write(tmp_path, ""), env={})
    assert c.mqtt.host == "localhost" and c.mqtt.port == 1883 and c.mqtt.qos == 1
    assert c.mqtt.topic_prefix == "emotion-edge"
    assert c.mqtt.device_id == cfg.default_device_id()
    assert re.fullmatch(rf"emotion-edge-{re.escape(c.mqtt.device_id)}-[0-9a-f]{{6}}", c.mqtt.client_id)
    assert c.homeassistant.discovery_prefix == "homeassistant"
    assert c.source.spec == "auto" and c.detector.type == "haar" and c.classifier.backend == "auto"


def test_client_ids_differ_between_starts(tmp_path: Path) -> None:
    # Two processes with one client id kick each other off the broker in a loop.
    path = write(tmp_path, "")
    assert load(path, env={}).mqtt.client_id != load(path, env={}).mqtt.client_id


def test_precedence_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nhost = "file-host"\nport = 1884\nqos = 0\n[source]\nloop = false\n')
    env = {"EMOTION_EDGE_MQTT_PORT": "1885", "EMOTION_EDGE_SOURCE_LOOP": "yes", "EMOTION_EDGE_MQTT_QOS": "2"}
    c = load(path, env=env, overrides={"mqtt.qos": 1})
    assert c.mqtt.host == "file-host"  # file only
    assert c.mqtt.port == 1885  # environment beats file
    assert c.source.loop is True  # environment strings become booleans
    assert c.mqtt.qos == 1  # flags beat environment
    assert c.origins["mqtt.host"] == "config.toml" and c.origins["mqtt.port"] == "EMOTION_EDGE_MQTT_PORT"


def test_the_config_file_variable_is_not_a_setting(tmp_path: Path) -> None:
    # EMOTION_EDGE_CONFIG names the file to read; it is not a [config] section.
    assert load(write(tmp_path, ""), env={"EMOTION_EDGE_CONFIG": "/y.toml"}).origins == {}  # all defaults


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[mqtt]\nport = "abc"\n', "config.toml: mqtt.port: expected an integer 1..65535, got 'abc'"),
        ("[mqtt]\nport = 70000\n", "config.toml: mqtt.port: expected an integer 1..65535, got 70000"),
        ("[mqtt]\nport = true\n", "config.toml: mqtt.port: expected an integer 1..65535, got true"),
        ("[mqtt]\nhots = 'x'\n", "config.toml: mqtt.hots: unknown key; did you mean host?"),
        ("[mqt]\nhost = 'x'\n", "config.toml: mqt: unknown section; did you mean mqtt?"),
        ("[detector]\ntype = 'dnn'\n", "config.toml: detector.type: expected one of haar, got 'dnn'"),
        ("[logging]\nlevel = 'loud'\n", "config.toml: logging.level: expected one of debug, info, warning, error"),
        ("[tracker]\nsmoothing = 31\n", "config.toml: tracker.smoothing: expected a number 0..30, got 31"),
        ("[source]\nloop = 'yes'\n", "config.toml: source.loop: expected true or false, got 'yes'"),
        (
            "[mqtt]\ndevice_id = 'kitchen/pi'\n",
            "config.toml: mqtt.device_id: expected letters, digits, '_', '-' or '.', starting with a letter or "
            "digit (one topic level: no '/', '+', '#' or spaces), got 'kitchen/pi'",
        ),
        (  # the message names '/' among what a prefix may have, as home/emotions is accepted
            "[mqtt]\ntopic_prefix = 'home/#'\n",
            "config.toml: mqtt.topic_prefix: expected levels of letters, digits, '_', '-' or '.' joined by '/', "
            "e.g. home/emotions, each starting with a letter or digit (no '+', '#' or spaces), got 'home/#'",
        ),
        ("[homeassistant]\ndiscovery_prefix = 'a//b'\n", "config.toml: homeassistant.discovery_prefix: expected level"),
        ("[mqtt]\ntls_ca = '/nonexistent/ca.pem'\n", "config.toml: mqtt.tls_ca: file not found: /nonexistent/ca.pem"),
        ("[classifier]\nmodel = '/nonexistent.tflite'\n", "config.toml: classifier.model: file not found"),
        ("[mqtt]\npassword = 'secret'\n", "config.toml: mqtt.password: set mqtt.username too"),
        ("[mqtt]\ntls_key = '/etc/ssl/pi.key'\n", "config.toml: mqtt.tls_key: set mqtt.tls_cert too"),
        ("[mqtt]\nhost = ''\n", "config.toml: mqtt.host: expected a host name, got ''"),
        ("[mqtt]\nport = 0\n", "config.toml: mqtt.port: expected an integer 1..65535, got 0"),
        ("[tracker]\nsmoothing = -0.5\n", "config.toml: tracker.smoothing: expected a number 0..30, got -0.5"),
        ("mqtt = 3\n", "config.toml: mqtt: expected a [mqtt] table, got 3"),
        ("[mqtt\n", "config.toml: not valid TOML"),
        ("[mqtt]\noutbox = '/tmp'\n", "config.toml: mqtt.outbox: /tmp is a folder; name the journal's file in it"),
        ("[mqtt]\noutbox = '/proc/version/o.db'\n", "config.toml: mqtt.outbox: /proc/version is not a folder"),
        (  # MQTT holds 65535 bytes: a longer id crashed paho's thread and lost the events it carried
            f"[mqtt]\nclient_id = '{'x' * 70000}'\n",
            "config.toml: mqtt.client_id: expected at most 65535 bytes, got 70000",
        ),
        (f"[mqtt]\ndevice_id = '{'d' * 129}'\n", "config.toml: mqtt.device_id: expected at most 128 bytes, got 129"),
        (  # every topic starts with it: a topic over 65535 bytes crashes the client's thread
            f"[mqtt]\ntopic_prefix = '{'t' * 70000}'\n",
            "config.toml: mqtt.topic_prefix: expected at most 1024 bytes, got 70000",
        ),
        (
            f"[homeassistant]\nstatus_topic = 'ha/{'s' * 1022}'\n",
            "config.toml: homeassistant.status_topic: expected at most 1024 bytes, got 1025",
        ),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text), env={})
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_what_the_topic_message_names_is_accepted(tmp_path: Path) -> None:
    """The error's own example and characters: several levels, '_', '-' and '.' in each."""
    text = "[mqtt]\ntopic_prefix = 'home/emotions'\ndevice_id = 'hall_1.b-2'\n"
    config = load(write(tmp_path, text), env={})
    assert (config.mqtt.topic_prefix, config.mqtt.device_id) == ("home/emotions", "hall_1.b-2")


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    port_message = r"^EMOTION_EDGE_MQTT_PORT: mqtt\.port: expected an integer 1\.\.65535, got 'x'$"
    with pytest.raises(ConfigError, match=port_message):
        load(write(tmp_path, ""), env={"EMOTION_EDGE_MQTT_PORT": "x"})
    with pytest.raises(ConfigError, match=r"^EMOTION_EDGE_MQTT_HOTS: mqtt\.hots: unknown key; did you mean host\?$"):
        load(write(tmp_path, ""), env={"EMOTION_EDGE_MQTT_HOTS": "x"})
    # a misspelt section, which was silently no setting at all
    with pytest.raises(ConfigError, match=r"^EMOTION_EDGE_MQQT_HOST: mqqt: unknown section; did you mean mqtt\?$"):
        load(write(tmp_path, ""), env={"EMOTION_EDGE_MQQT_HOST": "broker"})
    with pytest.raises(ConfigError, match=r"^EMOTION_EDGE_HOME_ASSISTANT_ENABLED: home_assistant: unknown section; "
                       r"did you mean homeassistant\?$"):  # fmt: skip
        load(write(tmp_path, ""), env={"EMOTION_EDGE_HOME_ASSISTANT_ENABLED": "false"})
    with pytest.raises(
        ConfigError, match=r"^EMOTION_EDGE_MQTT: names section mqtt but no key \(EMOTION_EDGE_MQTT_<KEY>\)$"
    ):
        load(write(tmp_path, ""), env={"EMOTION_EDGE_MQTT": "broker"})
    others = {"EMOTION_EDGE_PI": "yes", "EMOTION_EDGE_MACHINE_ID_FILE": str(tmp_path / "id")}  # setup.sh's, identity's
    assert load(write(tmp_path, ""), env=others).mqtt.host == "localhost"


def test_a_byte_order_mark_before_the_settings_is_no_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xef\xbb\xbf[mqtt]\nport = 1999\n")
    assert load(path, env={}).mqtt.port == 1999


def test_a_journal_behind_a_folder_this_user_cannot_enter_is_one_line(tmp_path: Path) -> None:
    """Python's path checks raise there: the config check crashed with a traceback."""
    message = r"^EMOTION_EDGE_MQTT_OUTBOX: mqtt\.outbox: cannot check .*: permission denied$"
    with locked_folder(tmp_path) as locked, pytest.raises(ConfigError, match=message):
        load(env={"EMOTION_EDGE_MQTT_OUTBOX": str(locked / "inner" / "outbox.db")})


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.toml: config file not found"):
        load(tmp_path / "absent.toml", env={})


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[mqtt]\nport = 2883\n")
    monkeypatch.setenv(cfg.CONFIG_ENV, str(path))
    assert cfg.resolve_path(None) == path
    assert load(None, env={}).mqtt.port == 2883


def test_example_config_lists_every_key_with_its_default(tmp_path: Path) -> None:
    """config.example.toml is what setup.sh installs: it must load and show every key at its default."""
    data = tomllib.loads(EXAMPLE.read_text())
    listed = {f"{section}.{key}": value for section, table in data.items() for key, value in table.items()}
    assert listed == {key: default for key, default, _env, _doc in cfg.describe()}
    load(EXAMPLE, env={})


def test_show_round_trips_through_toml(tmp_path: Path) -> None:
    c = load(write(tmp_path, "[mqtt]\nusername = 'u'\npassword = 'p\"q'\nport = 1999\n"), env={})
    shown = cfg.to_toml(c)
    assert 'p"q' not in shown and 'password = "********"' in shown
    reloaded = load(write(tmp_path, shown.replace("********", "x")), env={})
    assert reloaded.mqtt.port == 1999 and reloaded.mqtt.device_id == c.mqtt.device_id
    # derived ids stay derived: the shown file copied to another Pi gives it ids of its own
    assert f'client_id = ""  # here: "{c.mqtt.client_id}"' in shown and reloaded.mqtt.client_id != c.mqtt.client_id
    assert f'device_id = ""  # here: "{c.mqtt.device_id}"' in shown and reloaded.derived == c.derived
    pinned = load(write(tmp_path, "[mqtt]\nclient_id = 'fixed'\ndevice_id = 'hall'\n"), env={})
    assert 'client_id = "fixed"\n' in cfg.to_toml(pinned) and 'device_id = "hall"\n' in cfg.to_toml(pinned)


def test_docs_and_example_are_generated_from_the_settings_themselves() -> None:
    """docs/configuration.md's table and config.example.toml come from edge/config.py alone."""
    assert cfg.main(["--check"]) == 0, "run python -m edge.config --write"
    table = cfg.reference_table()
    for key, default, env, _meaning in cfg.describe():
        assert f"| `{key}` | `{cfg._toml_value(default)}` | `{env}` |" in table
    assert cfg.REFERENCE_BEGIN + "\n" + table in cfg.REFERENCE_DOC.read_text()
