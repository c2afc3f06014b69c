"""The boot test's judge (image-build/standin/parse_console.py): a console with every
check passed is accepted; a FAIL, a missing line or a station check that is PENDING
when the daemon exists is refused. The boot itself runs in `make test-image`."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from appliance_support import IMAGE_BUILD


def judge() -> ModuleType:
    path = IMAGE_BUILD / "standin" / "parse_console.py"
    spec = importlib.util.spec_from_file_location("parse_console", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def console(overrides: dict[str, str] | None = None) -> str:
    """A serial log as the VM prints it: kernel noise, CRs, one line per check."""
    pc = judge()
    lines = ["[    0.000000] Booting Linux on physical CPU 0x0\r"]
    for name in pc.EXPECTED:
        status = "INFO" if name in ("begin", "end") else "PASS"
        status = (overrides or {}).get(name, status)
        if status != "ABSENT":
            lines.append(f"BOOTCHECK {name} {status} detail for {name}\r")
    lines.append("[   42.000000] reboot: Power down")
    return "\n".join(lines)


def test_all_passed_is_accepted() -> None:
    pc = judge()
    assert pc.problems(pc.results(console()), station_pending=False) == []


def test_a_failure_is_refused() -> None:
    pc = judge()
    found = pc.results(console({"sandbox-ip-deny": "FAIL"}))
    assert pc.problems(found, station_pending=False) == ["sandbox-ip-deny: FAIL, expected PASS"]


def test_a_missing_line_is_refused() -> None:
    pc = judge()
    found = pc.results(console({"no-swap": "ABSENT", "end": "ABSENT"}))
    assert [p.split(":")[0] for p in pc.problems(found, station_pending=False)] == ["no-swap", "end"]


def test_pending_station_only_when_declared() -> None:
    pc = judge()
    # No station: its GPIO checks cannot run either.
    station_and_gpio = [*pc.STATION_CHECKS, *pc.GPIO_CHECKS]
    found = pc.results(console(dict.fromkeys(station_and_gpio, "PENDING")))
    assert pc.problems(found, station_pending=True) == []
    assert len(pc.problems(found, station_pending=False)) == len(station_and_gpio)
    # Declared pending but reported PASS: the declaration is wrong, refuse it too.
    assert len(pc.problems(pc.results(console()), station_pending=True)) == len(station_and_gpio)


def test_main_exit_status(tmp_path: Path) -> None:
    pc = judge()
    log = tmp_path / "console.log"
    log.write_text(console())
    assert pc.main([str(log)]) == 0
    log.write_text(console({"failed-units": "FAIL"}))
    assert pc.main([str(log)]) == 1


def test_gpio_checks_pending_only_when_declared() -> None:
    pc = judge()
    pending = pc.results(console(dict.fromkeys(pc.GPIO_CHECKS, "PENDING")))
    assert pc.problems(pending, station_pending=False, gpio_pending=True) == []
    assert len(pc.problems(pending, station_pending=False)) == len(pc.GPIO_CHECKS)
    assert len(pc.problems(pc.results(console()), station_pending=False, gpio_pending=True)) == len(pc.GPIO_CHECKS)
    failed = pc.results(console({"gpio-button": "FAIL"}))
    assert pc.problems(failed, station_pending=False) == ["gpio-button: FAIL, expected PASS"]
