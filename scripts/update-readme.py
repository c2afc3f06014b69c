#!/usr/bin/env python3
"""Rewrite the README's generated parts: the signal table and the example configurations.

Run after changing drivers/patterns.py, an example TOML file or the example alert rules:
    .venv/bin/python scripts/update-readme.py
tests/unit/test_readme.py fails until the README is in step.
"""

from __future__ import annotations

import re
from pathlib import Path

from clinicam.drivers.patterns import describe_patterns

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    table = describe_patterns().strip()
    text = re.sub(r"\| pattern \| means \|.*?\n(?!\|)", lambda _m: table + "\n", text, count=1, flags=re.S)
    for name, example in (
        ("station.toml", "firmware/station.example.toml"),
        ("relay.toml", "relay/relay.example.toml"),
    ):
        body = (ROOT / example).read_text().rstrip()
        pattern = rf"(<summary>{re.escape(name)}</summary>\n\n```toml\n).*?(\n```)"
        text = re.sub(pattern, lambda m, b=body: m.group(1) + b + m.group(2), text, count=1, flags=re.S)
    rules = (ROOT / "docs/prometheus/clinicam-alerts.yml").read_text().rstrip()
    pattern = r"(<summary>clinicam-alerts.yml</summary>\n\n```yaml\n).*?(\n```)"
    text = re.sub(pattern, lambda m: m.group(1) + rules + m.group(2), text, count=1, flags=re.S)
    readme.write_text(text)


if __name__ == "__main__":
    main()
