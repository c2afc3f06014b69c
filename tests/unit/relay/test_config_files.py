"""``relay.toml`` paths are checked when the relay starts: each problem names the file,
the section and the key, as the station's configuration errors do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from clinicam.common.errors import ConfigError
from clinicam.relay.config import check_files, load_relay_config
from conftest import UnitSite


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A folder other users may traverse (pytest's own tmp_path is root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="clinicam-relay-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def files(tmp_path: Path, unit_site: UnitSite) -> dict[str, Path]:
    """Every file a relay with a FHIR (bearer) and a DICOMweb (basic) sink reads."""
    out = {}
    for name, body in {
        "ca": b"-----BEGIN CERTIFICATE-----\n",
        "cert": b"-----BEGIN CERTIFICATE-----\n",
        "key": b"-----BEGIN PRIVATE KEY-----\n",
        "recipient.key": unit_site.recipient.private_pem(),
        "recipient.pub": unit_site.recipient.public_pem(),
        "token": b"synthetic-token\n",
        "password": b"synthetic-password\n",
        "pacs-ca": b"-----BEGIN CERTIFICATE-----\n",
    }.items():
        out[name] = tmp_path / name
        out[name].write_bytes(body)
    return out


def write_config(tmp_path: Path, files: dict[str, Path], **override: str) -> Path:
    f = {k.replace(".", "_"): str(v) for k, v in files.items()} | override
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[relay]\nstate_dir = "{tmp_path}/state"\nstatus_file = "{tmp_path}/run/status.json"\n'
        f'audit_log = "{tmp_path}/state/audit.jsonl"\n'
        f'[identity]\ncert = "{f["cert"]}"\nkey = "{f["key"]}"\nca = "{f["ca"]}"\n'
        f'recipient_keys = ["{f["recipient_key"]}"]\n'
        f'[[sinks]]\ntype = "directory"\nname = "archive"\npath = "{tmp_path}/captures"\n'
        f'[[sinks]]\ntype = "fhir"\nname = "emr"\nurl = "https://emr.example/fhir"\nca_file = "{f["pacs-ca"]}"\n'
        f'auth = "bearer"\ntoken_file = "{f["token"]}"\n'
        f'[[sinks]]\ntype = "dicomweb"\nname = "pacs"\nurl = "https://pacs.example/studies"\n'
        f'ca_file = "{f["pacs-ca"]}"\nauth = "basic"\nusername = "relay"\npassword_file = "{f["password"]}"\n'
    )
    return config


def problem(config: Path) -> str:
    with pytest.raises(ConfigError) as info:
        check_files(load_relay_config(config), source=config.name)
    return str(info.value)


def test_a_complete_configuration_passes(tmp_path: Path, files: dict[str, Path]) -> None:
    check_files(load_relay_config(write_config(tmp_path, files)))  # positive control: no error


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"token": "/nonexistent/t"}, "relay.toml: [sinks#2] token_file: /nonexistent/t does not exist"),
        ({"password": "/nonexistent/pw"}, "relay.toml: [sinks#3] password_file: /nonexistent/pw does not exist"),
        ({"pacs-ca": "/tmp"}, "relay.toml: [sinks#2] ca_file: /tmp is a directory, not a file"),
        ({"ca": "/nonexistent/ca.pem"}, "relay.toml: [identity] ca: /nonexistent/ca.pem does not exist"),
        ({"key": "/nonexistent/relay-1.key"}, "relay.toml: [identity] key: /nonexistent/relay-1.key does not exist"),
    ],
)
def test_a_missing_file_names_file_section_and_key(
    tmp_path: Path, files: dict[str, Path], override: dict[str, str], expected: str
) -> None:
    assert problem(write_config(tmp_path, files, **override)) == expected


def test_an_empty_token_file(tmp_path: Path, files: dict[str, Path]) -> None:
    files["token"].write_bytes(b"")
    assert problem(write_config(tmp_path, files)) == f"relay.toml: [sinks#2] token_file: {files['token']} is empty"


def test_a_public_key_given_as_recipient_key(tmp_path: Path, files: dict[str, Path]) -> None:
    message = problem(write_config(tmp_path, files, recipient_key=str(files["recipient.pub"])))
    assert message.startswith(f"relay.toml: [identity] recipient_keys: {files['recipient.pub']} is a public key")
    assert "recipient.key" in message


def test_a_garbled_recipient_key_names_its_file(tmp_path: Path, files: dict[str, Path]) -> None:
    files["recipient.key"].write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    message = problem(write_config(tmp_path, files))
    assert message.startswith(f"relay.toml: [identity] recipient_keys: {files['recipient.key']}: recipient")


def test_an_unwritable_state_dir(tmp_path: Path, files: dict[str, Path]) -> None:
    (tmp_path / "file").write_text("")
    config = write_config(tmp_path, files)
    config.write_text(config.read_text().replace(f'state_dir = "{tmp_path}/state"', f'state_dir = "{tmp_path}/file/x"'))
    assert problem(config) == f"relay.toml: [relay] state_dir: {tmp_path}/file/x: {tmp_path}/file is not a directory"


def test_bearer_without_token_file_is_a_config_error(tmp_path: Path, files: dict[str, Path]) -> None:
    config = write_config(tmp_path, files)
    config.write_text(config.read_text().replace(f'token_file = "{files["token"]}"\n', ""))
    with pytest.raises(ConfigError, match=r'relay.toml: \[sinks#2\] auth = "bearer" needs token_file'):
        load_relay_config(config)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the relay as another user")
def test_relay_run_refuses_an_unreadable_token_and_says_which(open_tmp: Path, files: dict[str, Path]) -> None:
    """The real command, as the relay's service user would run it: exit 1, one line,
    before any connection (so no sink files a capture the others cannot)."""
    tmp_path = open_tmp
    for name, path in list(files.items()):
        files[name] = Path(shutil.copy(path, tmp_path / name))
        files[name].chmod(0o644)
    files["token"].chmod(0o600)  # root's, not the relay user's
    config = write_config(tmp_path, files)
    for folder in ("state", "run", "captures"):
        (tmp_path / folder).mkdir(mode=0o777)
        (tmp_path / folder).chmod(0o777)
    result = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         sys.executable, "-m", "clinicam.tools.cli", "relay", "run", "--config", str(config)],
        capture_output=True, text=True, check=False, timeout=60, cwd="/",
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"clinicam relay: relay.toml: [sinks#2] token_file: {files['token']} cannot be read by nobody "
        "(permission denied): check its owner and mode\n"
    )


def test_the_old_run_status_file_is_read_as_the_state_directory_one(tmp_path: Path) -> None:
    """relay.toml is a conffile: an edited one keeps the old default after an upgrade, and a
    status file under /run would forget every station at each reboot (issue 16)."""
    from clinicam.relay.config import LEGACY_STATUS_FILE, relay_config_from

    sink = [{"type": "directory", "name": "a", "path": str(tmp_path / "a")}]
    old = relay_config_from({"relay": {"state_dir": str(tmp_path / "s"), "status_file": LEGACY_STATUS_FILE},
                             "sinks": sink})
    assert old.relay.status_file == str(tmp_path / "s" / "status.json") and old.relay.status_file_moved
    own = relay_config_from({"relay": {"status_file": str(tmp_path / "x.json")}, "sinks": sink})
    assert own.relay.status_file == str(tmp_path / "x.json") and not own.relay.status_file_moved
    default = relay_config_from({"sinks": sink}).relay
    assert default.status_file == "/var/lib/clinicam-relay/status.json" == f"{default.state_dir}/status.json"
