"""The README's reference parts are generated from the code: keep them in step."""

from __future__ import annotations

from pathlib import Path

from clinicam.drivers.patterns import describe_patterns

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_starts_with_the_two_commands():
    first_block = README.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


def test_readme_shows_the_current_signal_table():
    assert describe_patterns().strip() in README


def test_readme_embeds_the_example_configurations_verbatim():
    for example in ("firmware/station.example.toml", "relay/relay.example.toml"):
        text = (ROOT / example).read_text().rstrip()
        assert f"```toml\n{text}\n```" in README, f"run scripts/update-readme.py: README is behind {example}"


def test_readme_embeds_the_example_alert_rules_verbatim():
    rules = (ROOT / "docs/prometheus/clinicam-alerts.yml").read_text().rstrip()
    assert f"```yaml\n{rules}\n```" in README, "run scripts/update-readme.py: README is behind the alert rules"
