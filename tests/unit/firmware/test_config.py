"""Station and relay configuration: the examples load, and every kind of mistake is
refused with a message naming the file, the key and the problem."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from clinicam.common.errors import ConfigError
from clinicam.firmware.config import EXAMPLE as STATION_EXAMPLE
from clinicam.firmware.config import load_station_config, station_config_from
from clinicam.protocol.topics import DEFAULT_PREFIX
from clinicam.relay.config import EXAMPLE as RELAY_EXAMPLE
from clinicam.relay.config import load_relay_config, relay_config_from


def station(text: str):
    return station_config_from(tomllib.loads(text))


def relay(text: str):
    return relay_config_from(tomllib.loads(text))


def test_station_example_loads_with_documented_defaults():
    config = load_station_config(STATION_EXAMPLE)
    assert config == station("")  # the example shows exactly the defaults
    assert config.uplink.topic_prefix == DEFAULT_PREFIX
    assert config.sealing.chunk_size == 122880
    assert config.workflow.session_idle_s == 120.0
    assert config.workflow.require_clock_sync is True
    assert config.memory_lock_required is True  # backend "pi"


def test_relay_example_loads():
    config = load_relay_config(RELAY_EXAMPLE)
    assert [s.name for s in config.sinks] == ["archive"]
    assert config.quarantine_sink is None
    assert config.relay.workers == 1


def test_example_documents_every_station_key():
    """A key missing from the annotated example is a key nobody can discover."""
    text = STATION_EXAMPLE.read_text()
    config = station("")
    for section_name in config.__dataclass_fields__:
        section = getattr(config, section_name)
        assert f"[{section_name}]" in text
        for key in section.__dataclass_fields__:
            documented = f"{key} =" in text or f"[[{section_name}.{key}]]" in text
            assert documented, f"{section_name}.{key} undocumented"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[uplink]\nport = 0", "station.toml: [uplink] port: must be 1..65535, got 0"),
        ("[uplink]\nport = 70000", "[uplink] port: must be 1..65535, got 70000"),
        ("[uplink]\nport = true", "[uplink] port: must be an integer, got true"),
        ("[uplink]\nport = '8883'", "[uplink] port: must be an integer, got '8883'"),
        ("[vault]\nttl_s = 'long'", "[vault] ttl_s: must be a number, got 'long'"),
        ("[workflow]\nrequire_consent = 1", "[workflow] require_consent: must be true or false, got 1"),
        ("[hardware]\nbackend = 'PI'", "[hardware] backend: must be one of 'pi' | 'sim', got 'PI'"),
        ("[uplink]\nprot = 8883", "[uplink] prot: unknown key"),
        ("[uplnk]\nport = 8883", "station.toml: uplnk: unknown key"),
        ("uplink = 3", "uplink: must be a table"),
        ("[reader]\nformats = []", "[reader] formats: must not be empty"),
        ("[reader]\nformats = ['aztec']", "[reader] formats: must name symbologies"),
        ("[reader]\nformats = 'qr'", "[reader] formats: must be a list, got 'qr'"),
        ("[panel]\nshutter_pin = 40", "[panel] shutter_pin: must be 0..27, got 40"),
        ("[hardware]\nsim_images = 'frames'", "[hardware] sim_images: must be an absolute path"),
        ("[uplink]\ntopic_prefix = 'clinicam/#'", "[uplink] topic_prefix: must be a topic prefix"),
        ("[uplink]\nreconnect_min_s = 50\nreconnect_max_s = 10", "reconnect_min_s: must not exceed reconnect_max_s"),
        ("[cards]\nbody_sites = ['arm']", "[cards] body_sites: must be SNOMED CT codes"),
        ("[sealing]\nchunk_size = 10", "[sealing] chunk_size: must be 1024..16777216, got 10"),
        ("[camera]\nlores_width = 1281",
         "[camera] lores_width: must be even (the camera aligns odd sizes down), got 1281"),
        ("[camera]\nlores_height = 721", "[camera] lores_height: must be even"),
        ("[camera]\nstill_width = 1279", "[camera] still_width: must be even"),
        ("[camera]\nstill_width = 1024\nstill_height = 768\nlores_width = 1280",
         "[camera] lores_width x lores_height (1280x720) may not exceed still_width x still_height (1024x768)"),
        ("[hardware]\ncamera = 'usb'", "[hardware] camera: must be one of '' | 'pi' | 'sim', got 'usb'"),
    ],
)
def test_station_bad_values_name_file_key_and_problem(text, message):
    with pytest.raises(ConfigError) as info:
        station(text)
    assert message in str(info.value)


RULE = "[[codes.rules]]\nname = 'mrn'\nkind = 'patient'\nissuer = 'urn:oid:1.2.3'\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("pattern = '('", "[codes.rules#1] pattern: must be a valid regular expression"),
        ("pattern = '[0-9]+'", "pattern: must have a named group (?P<id>...)"),
        ("pattern = '(?P<id>[0-9]+)'\ncheck = 'crc'", "[codes.rules#1] check: must be one of"),
        ("pattern = '(?P<id>[0-9]+)'\nmin_length = 9\nmax_length = 3", "min_length: must not exceed max_length"),
        ("", "[codes.rules#1] pattern: missing"),
    ],
)
def test_site_rules_are_validated(extra, message):
    with pytest.raises(ConfigError) as info:
        station(RULE + extra)
    assert message in str(info.value)


def test_valid_site_rule_loads():
    config = station(RULE + "pattern = 'MRN(?P<id>[0-9]{7})'\ncheck = 'luhn'\nsymbologies = ['code128']")
    (rule,) = config.codes.rules
    assert (rule.kind, rule.check, rule.symbologies) == ("patient", "luhn", ("code128",))


SINK = "[[sinks]]\ntype = 'directory'\nname = 'archive'\npath = '/srv/x'\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "relay.toml: sinks: configure at least one sink"),
        ("[[sinks]]\ntype = 'ftp'\nname = 'a'", "[sinks#1] type: must be one of 'directory'"),
        ("[[sinks]]\nname = 'a'", "[sinks#1] type: missing"),
        ("[[sinks]]\ntype = 'directory'\nname = 'a'", "[sinks#1] path: missing"),
        (SINK + SINK, "sinks: names must be unique, repeated: archive"),
        (SINK + "[relay]\nworker = 2\nworkers = 2", "[relay] worker: must be below workers (2), got 2"),
        (SINK + "[relay]\nstandby_for = [5]", "[relay] standby_for: workers are numbered 0..0"),
        (SINK + "[identity]\nrecipient_keys = []", "[identity] recipient_keys: must list at least one"),
        (
            "[[sinks]]\ntype = 'dicomweb'\nname = 'pacs'\nurl = 'ftp://x'",
            "[sinks#1] url: must be an http(s) URL",
        ),
        (
            SINK + "[[sinks]]\ntype = 'dimse'\nname = 'p'\nhost = 'h'\ncalled_ae = 'WAY-TOO-LONG-AE-TITLE'",
            "[sinks#2] called_ae: must be 1..16 printable ASCII characters",
        ),
        (SINK + "[broker]\nport = 0", "relay.toml: [broker] port: must be 1..65535, got 0"),
    ],
)
def test_relay_bad_values(text, message):
    with pytest.raises(ConfigError) as info:
        relay(text)
    assert message in str(info.value)


def test_missing_file_says_how_to_create_one(tmp_path: Path):
    missing = tmp_path / "station.toml"
    with pytest.raises(ConfigError) as info:
        load_station_config(missing)
    assert str(missing) in str(info.value)
    assert "station.example.toml" in str(info.value)
    assert "--config" in str(info.value)


def test_invalid_toml_names_the_file(tmp_path: Path):
    path = tmp_path / "station.toml"
    path.write_text("[uplink\nport = 1\n")
    with pytest.raises(ConfigError, match=r"^station.toml: not valid TOML"):
        load_station_config(path)


def test_unreadable_file_is_a_config_error(tmp_path: Path):
    path = tmp_path / "relay.toml"
    path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_relay_config(path)


def test_config_is_frozen():
    config = station("")
    with pytest.raises(AttributeError):
        config.uplink.port = 1  # type: ignore[misc]
