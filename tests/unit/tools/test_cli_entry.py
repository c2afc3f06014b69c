"""The ``clinicam`` entry point, run as the real installed command: no traceback reaches
a user — a closed pipe ends quietly (141), Ctrl-C says so (130), a bad file names itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

CLINICAM = [sys.executable, "-m", "clinicam.tools.cli"]
SHEET = "CLINICAM:PURPOSE:WOUND"


def clinicam(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    kw.setdefault("capture_output", True)
    return subprocess.run([*CLINICAM, *args], text=True, timeout=120, check=False, **kw)  # type: ignore[call-overload]


def into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """``clinicam ARGS | head -0``: the reader is gone before the first write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return clinicam(*args, stdout=write_end, stderr=subprocess.PIPE, capture_output=False)
    finally:
        os.close(write_end)


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr and "Error:" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def card_images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    import segno

    folder = tmp_path_factory.mktemp("scan")
    paths = []
    for i in range(6):
        path = folder / f"card-{i}.png"
        segno.make(SHEET, error="m").save(str(path), scale=8, border=4)
        paths.append(str(path))
    return paths


def test_version() -> None:
    result = clinicam("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("clinicam ") and result.stdout.split()[1][0].isdigit()


def test_scan_into_a_closed_pipe_ends_quietly(card_images: list[str]) -> None:
    control = clinicam("scan", *card_images)  # positive control: the same command prints
    assert control.returncode == 0 and control.stdout.count("card PURPOSE:WOUND") == len(card_images)
    result = into_closed_pipe("scan", *card_images)
    assert result.returncode == 141
    assert result.stderr == ""


def test_scan_into_head_1(card_images: list[str]) -> None:
    """The shell pipeline of the issue, exactly: ``clinicam scan … | head -1``."""
    cmd = " ".join([*CLINICAM, "scan", *card_images * 4]) + " | head -1; echo \"status=${PIPESTATUS[0]}\""
    result = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=False, timeout=120)
    assert result.stdout.splitlines()[0].endswith("card-0.png: 1 code(s)")
    assert result.stdout.splitlines()[-1] in ("status=0", "status=141")
    no_traceback(result)
    assert result.stderr == ""


def test_relay_status_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    stations = {f"ward-{i}-cart": {"state": "online", "pending": 0} for i in range(500)}
    status.write_text(json.dumps({"stations": stations, "updated": "2026-12-07T00:00:00Z"}))
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[relay]\nstatus_file = "{status}"\n[[sinks]]\ntype = "directory"\nname = "a"\npath = "{tmp_path}"\n'
    )
    control = clinicam("relay", "status", "--config", str(config))
    # A file with no writing relay is a warning (exit 1); what matters here is that the
    # whole listing is printed when someone reads it.
    assert control.returncode == 1 and "ward-499-cart" in control.stdout
    no_traceback(control)
    for extra in ((), ("--json",)):
        result = into_closed_pipe("relay", "status", "--config", str(config), *extra)
        assert (result.returncode, result.stderr) == (141, "")


def test_scan_names_each_file_it_cannot_read(tmp_path: Path, card_images: list[str]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    result = clinicam("scan", str(tmp_path), str(tmp_path / "absent.png"), str(text), card_images[0])
    assert result.returncode == 2
    no_traceback(result)
    lines = result.stderr.splitlines()
    assert lines == [
        f"clinicam scan: {tmp_path}: is a directory",
        f"clinicam scan: {tmp_path / 'absent.png'}: no such file",
        f"clinicam scan: {text}: not an image (PNG, JPEG, TIFF… or a PDF card sheet)",
    ]
    assert "card PURPOSE:WOUND" in result.stdout  # the readable one is still read


@pytest.mark.parametrize(
    "argv",
    [
        ["scan", "--config", "{dir}", "x.png"],
        ["station", "selftest", "--config", "{dir}", "--no-network"],
        ["relay", "status", "--config", "{dir}"],
        ["relay", "run", "--config", "{dir}"],
        ["cards", "--site-config", "{dir}", "--out", "{dir}/x.pdf"],
        ["provision", "show", "--site", "{dir}/nothing"],
    ],
)
def test_a_directory_or_missing_file_where_a_file_belongs(tmp_path: Path, argv: list[str]) -> None:
    result = clinicam(*(a.format(dir=tmp_path) for a in argv))
    assert result.returncode in (1, 2)
    no_traceback(result)
    said = (result.stdout + result.stderr).strip().splitlines()  # selftest reports on stdout
    assert len(said) == 1 and str(tmp_path) in said[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the command as another user")
def test_an_unreadable_config_says_permission_denied() -> None:
    folder = Path(tempfile.mkdtemp(prefix="clinicam-cli-"))
    try:
        folder.chmod(0o755)  # others may enter the folder, not read the file
        config = folder / "station.toml"
        config.write_text("[device]\n")
        as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *CLINICAM]
        run = [*as_nobody, "scan", "--config", str(config), str(folder / "x.png")]
        config.chmod(0o644)  # positive control: readable, the config is fine, only x.png is missing
        control = subprocess.run(run, capture_output=True, text=True, check=False, timeout=60, cwd="/")
        assert control.stderr == f"clinicam scan: {folder / 'x.png'}: no such file\n"
        config.chmod(0o600)
        result = subprocess.run(run, capture_output=True, text=True, check=False, timeout=60, cwd="/")
    finally:
        shutil.rmtree(folder)
    no_traceback(result)
    assert result.returncode == 2
    assert result.stderr == f"clinicam scan: {config}: cannot read (permission denied); check its owner and mode\n"


def test_ctrl_c_is_a_message_and_status_130(site: Any, tmp_path: Path) -> None:
    """Ctrl-C while ``relay cmd`` waits for a broker that never answers the handshake."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts the TCP connection, never speaks TLS
        relay = site.relay(1)
        config = tmp_path / "relay.toml"
        config.write_text(
            f'[broker]\nhost = "127.0.0.1"\nport = {silent.getsockname()[1]}\n'
            f'[identity]\ncert = "{relay.cert}"\nkey = "{relay.key}"\nca = "{site.ca_pem}"\n'
            f'recipient_keys = ["{site.recipient_key_path}"]\n'
            f'[[sinks]]\ntype = "directory"\nname = "a"\npath = "{tmp_path}"\n'
        )
        proc = subprocess.Popen(
            [*CLINICAM, "relay", "cmd", "--config", str(config), "station-a", "ping", "--timeout", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        conn, _ = silent.accept()  # the command is now inside its TLS handshake
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        conn.close()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "clinicam relay: interrupted"
    no_traceback(subprocess.CompletedProcess([], 130, out, err))


def command_paths() -> list[list[str]]:
    """Every command and subcommand of ``clinicam``, as argv prefixes."""
    import argparse

    from clinicam.tools import cli

    parser, sub = cli._parser()
    for name in cli.GROUPS:
        cli._register(sub, name)

    def walk(p: argparse.ArgumentParser, path: list[str]) -> list[list[str]]:
        out = [path]
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    out += walk(child, [*path, name])
        return out

    return walk(parser, [])


def test_no_help_text_shows_restructuredtext_markup(capsys: pytest.CaptureFixture[str]) -> None:
    from clinicam.tools.cli import main

    paths = command_paths()
    assert len(paths) > 20 and ["relay", "run"] in paths and ["persist", "erase"] in paths
    for path in paths:
        with pytest.raises(SystemExit):
            main([*path, "--help"])
        text = capsys.readouterr().out
        assert text.startswith("usage: clinicam"), path
        marked = [line for line in text.splitlines() if "`" in line]
        assert not marked, f"clinicam {' '.join(path)} --help: {marked}"
    real = clinicam("relay", "--help")  # the installed command, the group whose docstring is its help
    assert real.returncode == 0 and "'clinicam relay run|status|cmd'" in real.stdout and "`" not in real.stdout


def test_plain_turns_markup_into_quotes() -> None:
    from clinicam.tools.cli import plain

    assert plain("``clinicam relay run`` and :func:`main`") == "'clinicam relay run' and 'main'"
    assert plain(None) is None
