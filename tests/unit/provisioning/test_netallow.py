"""The station's address allow-list: recorded at provisioning, applied before each start.

``apply`` talks to systemd; here it is checked up to the exact ``systemctl`` command
(the boot test, make test-image, runs it under systemd and reads the unit back)."""

from __future__ import annotations

import json
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
