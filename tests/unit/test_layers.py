"""The layers of DESIGN §2, enforced: every import in the source tree points down.

common → protocol → {drivers, provisioning} → firmware; relay → {protocol, provisioning,
common}. Tools may import anything, and nothing imports tools. The protocol (the v1
wire contract) depends on nothing but ``common``, the standard library and cryptography,
so an independent implementation can be written from it alone.

The walk is over the AST, so imports inside functions (the lazy ones of the CLI) count
as much as the ones at the top of a module.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> the clinicam packages it may import (itself included)
ALLOWED: dict[str, set[str]] = {
    "common": {"common"},
    "protocol": {"common", "protocol"},
    "drivers": {"common", "protocol", "drivers"},
    "provisioning": {"common", "protocol", "provisioning"},
    "firmware": {"common", "protocol", "drivers", "provisioning", "firmware"},
    "relay": {"common", "protocol", "provisioning", "relay"},
    "tools": {"common", "protocol", "drivers", "provisioning", "firmware", "relay", "tools"},
}
# third-party distributions a package may import besides the standard library
THIRD_PARTY: dict[str, set[str] | None] = {
    "common": set(),
    "protocol": {"cryptography"},
}


def imports(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """Every absolute module name imported by ``source``, with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative imports are not used in this tree; flag them
                found.append((node.lineno, "." * node.level + (node.module or "")))
            elif node.module == "clinicam":
                found += [(node.lineno, f"clinicam.{a.name}") for a in node.names]
            elif node.module:
                found.append((node.lineno, node.module))
    return found


def violations(package: str, source: str, filename: str = "<source>") -> list[str]:
    """What in ``source`` (a module of ``package``) imports against the layers."""
    out = []
    for line, name in imports(source, filename):
        where = f"{filename}:{line}: {package} imports {name}"
        if name.startswith("."):
            out.append(f"{where} (relative import)")
            continue
        top, _, rest = name.partition(".")
        if top == "clinicam":
            target = rest.partition(".")[0]
            if target not in ALLOWED[package]:
                out.append(f"{where} (may import only {sorted(ALLOWED[package])})")
        elif package in THIRD_PARTY and top not in sys.stdlib_module_names \
                and top not in (THIRD_PARTY[package] or set()) and top != "__future__":
            out.append(f"{where} (third-party; allowed: {sorted(THIRD_PARTY[package] or [])})")
    return out


def test_every_import_points_down_the_layers() -> None:
    problems = []
    for package in ALLOWED:
        files = sorted((ROOT / package).rglob("*.py"))
        assert files, f"no sources under {package}/"
        for path in files:
            problems += violations(package, path.read_text(), str(path.relative_to(ROOT)))
    assert problems == []


@pytest.mark.parametrize(("package", "source", "reason"), [
    ("relay", "from clinicam.firmware.station import Station\n", "may import only"),
    ("protocol", "def f():\n    from clinicam.provisioning import pki\n", "may import only"),
    ("firmware", "import clinicam.tools.demo\n", "may import only"),
    ("common", "from clinicam import protocol\n", "may import only"),
    ("protocol", "import paho.mqtt.client\n", "third-party"),
    ("drivers", "from . import scenes\n", "relative import"),
])
def test_an_import_against_the_direction_is_caught(package: str, source: str, reason: str) -> None:
    """Positive control: the checker sees each kind of wrong import, even inside a function."""
    found = violations(package, source)
    assert len(found) == 1 and reason in found[0]


def test_imports_that_point_down_pass() -> None:
    assert violations("firmware", "from clinicam.protocol.topics import Topics\nimport gpiozero\n") == []
    assert violations("tools", "from clinicam.relay import core\nfrom clinicam.firmware import station\n") == []
    assert violations("protocol", "from cryptography.hazmat.primitives import hpke\nimport json\n") == []
