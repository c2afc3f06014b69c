"""The station's address allow-list: recorded at provisioning, applied before each start.

``apply`` talks to systemd; here it is checked up to the exact ``systemctl`` command
(the boot test, make test-image, runs it under systemd and reads the unit back)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from clinicam.common.errors import ProvisioningError
from clinicam.provisioning import netallow


def test_a_literal_address_is_taken_as_is() -> None:
    def never(host: str) -> list[str]:
        raise AssertionError("a literal must not be resolved")

    assert netallow.addresses_for("10.0.0.5", resolve=never) == ["10.0.0.5"]
    assert netallow.addresses_for("fd00::5", resolve=never) == ["fd00::5"]


def test_a_name_is_resolved_now_and_deduplicated() -> None:
    answers = {"mqtt.north.example": ["10.0.0.5", "10.0.0.5", "fd00::5"]}
    assert netallow.addresses_for("mqtt.north.example", resolve=answers.__getitem__) == ["10.0.0.5", "fd00::5"]


def test_an_unresolvable_name_says_what_to_do() -> None:
    def fail(host: str) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(ProvisioningError, match="--allow-address"):
        netallow.addresses_for("mqtt.nowhere.example", resolve=fail)


def test_names_and_garbage_are_refused() -> None:
    with pytest.raises(ProvisioningError, match="takes no host names"):
        netallow.normalise(["mqtt.north.example"])
    with pytest.raises(ProvisioningError, match="no broker address"):
        netallow.normalise([])


def test_written_then_read_back(tmp_path: Path) -> None:
    path = netallow.write(tmp_path, ["192.0.2.10/32", "192.0.2.0/28", "192.0.2.10"])
    assert json.loads(path.read_text()) == {"ip_allow": ["192.0.2.10", "192.0.2.0/28"]}
    assert netallow.read(tmp_path) == ["192.0.2.10", "192.0.2.0/28"]


def test_absent_file_keeps_the_image_list(tmp_path: Path) -> None:
    assert netallow.read(tmp_path) is None
    assert "the image's address list stays" in netallow.apply(tmp_path)


def test_damaged_file_fails_closed_with_a_remedy(tmp_path: Path) -> None:
    (tmp_path / netallow.ALLOW_FILE).write_text('{"ip_allow": "10.0.0.5"}')
    with pytest.raises(ProvisioningError, match="provision install' again"):
        netallow.apply(tmp_path)


def test_set_property_replaces_the_image_list_and_keeps_localhost() -> None:
    argv = netallow.set_property_argv(["10.0.0.5"])
    assert argv[:4] == ["systemctl", "set-property", "--runtime", "clinicam-station.service"]
    # The empty assignment first: systemd then drops the image's CLINICAM_IP_ALLOW list.
    assert argv[4:] == ["IPAddressAllow=", "IPAddressAllow=localhost", "IPAddressAllow=10.0.0.5"]


def test_update_server_is_resolved_now_and_must_be_https() -> None:
    answers = {"updates.north.example": ["10.0.0.9", "fd00::9"]}
    server = netallow.UpdateServer.parse("https://updates.north.example:8443/", resolve=answers.__getitem__)
    assert server == netallow.UpdateServer("https://updates.north.example:8443", ("10.0.0.9", "fd00::9"), 8443)
    assert netallow.UpdateServer.parse("https://10.0.0.9").port == 443
    for bad in ("http://10.0.0.9", "https://10.0.0.9/bundles/x.raucb", "10.0.0.9:8443", "https://10.0.0.9:99999"):
        with pytest.raises(ProvisioningError, match="--update-server"):
            netallow.UpdateServer.parse(bad)

    def fail(host: str) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(ProvisioningError, match=r"update server host 'nowhere\.example'.*https://ADDRESS:PORT"):
        netallow.UpdateServer.parse("https://nowhere.example", resolve=fail)


def test_broker_port_and_update_server_are_recorded_and_read_back(tmp_path: Path) -> None:
    server = netallow.UpdateServer("https://10.0.0.9:8443", ("10.0.0.9",), 8443)
    netallow.write(tmp_path, ["10.0.0.5"], 18883, server)
    assert netallow.read_all(tmp_path) == netallow.Allowed(["10.0.0.5"], 18883, server)
    assert netallow.read(tmp_path) == ["10.0.0.5"]
    # A file from before: no port, no update server.
    netallow.write(tmp_path, ["10.0.0.5"])
    assert netallow.read_all(tmp_path) == netallow.Allowed(["10.0.0.5"])


@pytest.mark.parametrize("damage", [{"broker_port": "8883"}, {"broker_port": 0},
                                    {"update_server": {"url": "https://x:1"}},
                                    {"update_server": {"url": "http://x:1", "addresses": ["10.0.0.9"], "port": 1}}])
def test_damaged_port_or_update_server_fails_closed(tmp_path: Path, damage: dict[str, object]) -> None:
    (tmp_path / netallow.ALLOW_FILE).write_text(json.dumps({"ip_allow": ["10.0.0.5"], **damage}))
    with pytest.raises(ProvisioningError, match="provision install' again"):
        netallow.read_all(tmp_path)


def test_firewall_sets_are_emptied_then_filled_per_family() -> None:
    server = netallow.UpdateServer("https://updates:8443", ("10.0.0.9", "fd00::9"), 8443)
    script = netallow.nft_script(netallow.Allowed(["10.0.0.5", "10.0.1.0/28"], 18883, server)).splitlines()
    assert script[:4] == [f"flush set inet clinicam {s}" for s in ("broker4", "broker6", "update4", "update6")]
    assert script[4:] == [
        "add element inet clinicam broker4 { 10.0.0.5 . 18883, 10.0.1.0/28 . 18883 }",
        "add element inet clinicam update4 { 10.0.0.9 . 8443 }",
        "add element inet clinicam update6 { fd00::9 . 8443 }",
    ]
    # Nothing recorded: only the flushes (no update server is reachable at all).
    assert len(netallow.nft_script(netallow.Allowed(["10.0.0.5"])).splitlines()) == 4


class Recorder:
    """Stands in for subprocess.run: records argv and stdin, answers with a given status."""

    def __init__(self, fail: str = "") -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.fail = fail

    def __call__(self, argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        self.calls.append((argv, kw.get("input")))  # type: ignore[arg-type]
        rc = 1 if self.fail and argv[0] == self.fail else 0
        return subprocess.CompletedProcess(argv, rc, "", "Error: No such file or directory" if rc else "")


def test_apply_sets_the_unit_and_the_firewall(tmp_path: Path) -> None:
    server = netallow.UpdateServer("https://10.0.0.9:8443", ("10.0.0.9",), 8443)
    netallow.write(tmp_path, ["10.0.0.5"], 18883, server)
    run = Recorder()
    account = netallow.apply(tmp_path, run=run)
    assert [argv[0] for argv, _ in run.calls] == ["systemctl", "nft"]
    assert run.calls[1][1] is not None and "update4 { 10.0.0.9 . 8443 }" in run.calls[1][1]
    assert "update-fetch may reach https://10.0.0.9:8443" in account
    failing = Recorder(fail="nft")
    with pytest.raises(ProvisioningError, match=r"nftables\.service"):
        netallow.apply(tmp_path, run=failing)
