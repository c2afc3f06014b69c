"""Every program the test suite runs comes from a package in the bootstrap's ``base`` group.

``make test`` installs the ``base`` group (scripts/bootstrap.sh) and nothing else, so a
test that shells out to a program from any other package passes on the developer's
machine and fails on the next fresh one (it happened: ``mkfs.vfat`` came from the
``image`` group's dosfstools). This guard reads the tests and the code they run, finds
the programs they start (``subprocess.*([...])``, ``shutil.which(...)``, argv lists that
flow into them, and every name of the table below anywhere in ``tests/``), and checks
each against ``TOOL_PACKAGES`` and the ``base`` group. It is static — it works on a
machine where the program is missing, which is the case it exists for — and where
``dpkg`` is present it also checks the table against what the installed files belong to.

Adding a tool: put ``"program": "debian-package"`` into ``TOOL_PACKAGES`` below and the
package into ``[base]`` in scripts/bootstrap.sh (the failure message says exactly that).
"""

from __future__ import annotations

import ast
import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "scripts" / "bootstrap.sh"
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()

# Programs the suite (or the code it runs) may start -> the Debian package that ships
# them. Keep it sorted. The package of every program a test actually starts must be in
# the base group; entries for programs no test starts yet are harmless.
TOOL_PACKAGES: dict[str, str] = {
    "Orthanc": "orthanc",
    "cryptsetup": "cryptsetup-bin",
    "dciodvfy": "dicom3tools",
    "debugfs": "e2fsprogs",
    "git": "git",
    "mke2fs": "e2fsprogs",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mdir": "mtools",
    "mosquitto": "mosquitto",
    "mosquitto_pub": "mosquitto-clients",
    "mosquitto_sub": "mosquitto-clients",
    "nft": "nftables",
    "openssl": "openssl",
    "pdfinfo": "poppler-utils",
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "rauc": "rauc",
    "mmdebstrap": "mmdebstrap",
    "pdftoppm": "poppler-utils",
    "shellcheck": "shellcheck",
    "strace": "strace",
    "systemctl": "systemd",
    "systemd-analyze": "systemd",
    "systemd-escape": "systemd",
    "systemd-sysusers": "systemd",
}

# Programs of Essential / Priority: required packages (on every Debian system, never in
# a bootstrap group), and the Python the suite already runs under.
SYSTEM_COMMANDS: dict[str, str] = {
    **dict.fromkeys(
        [
            "cat", "chmod", "chown", "chroot", "cp", "date", "dd", "env", "false", "id", "install", "ln", "ls",
            "mkdir", "mknod", "mv", "rm", "rmdir", "sync", "test", "timeout", "touch", "true", "truncate",
        ],
        "coreutils",
    ),
    **dict.fromkeys(["blkid", "fallocate", "findmnt", "setpriv"], "util-linux"),
    **dict.fromkeys(["mount", "umount"], "mount"),
    **dict.fromkeys(["cut", "dirname", "head", "sha256sum"], "coreutils"),
    "grep": "grep",
    "sed": "sed",
    "dpkg-deb": "dpkg",
    "dpkg-query": "dpkg",
    "apt-get": "apt",
    "sh": "dash",
    "bash": "bash",
    "python": "python3",
    "python3": "python3",
}

# Programs the installed station or relay runs that no test starts (real block devices,
# a Raspberry Pi's firmware interface, the host's systemd). Say why when adding one.
NOT_RUN_BY_TESTS: dict[str, str] = {
    "blkdiscard": "persist erase on a real block device only (tests use image files)",
    "udevadm": "waits for a real block device's udev events; image files have none",
    "rpi-otp-private-key": "Raspberry Pi OTP key, on a Pi only",
    "vcmailbox": "Raspberry Pi firmware mailbox, on a Pi only",
}

# Programs the bootstrap installs with pip into a venv of their own (not apt packages).
PIP_TOOLS: dict[str, str] = {
    "sekmet": ".venv-fhir",  # the FHIR R4 test server
}

# Where the suite's programs are started: the tests themselves and the code they run.
# tests/hardware runs only on a Pi (pytest -m hardware), never in make test.
SCANNED = ("tests", "firmware", "provisioning", "relay", "drivers", "common", "protocol", "tools")
SKIPPED = ("tests/hardware",)

# Shell scripts `make test` runs: the bootstrap itself, and the appliance recipe that
# tests/appliance runs on a scratch root (chroot and systemctl recorded, not run).
SHELL_SCRIPTS = ("scripts/bootstrap.sh", "image-build/hooks/customize.sh")
_SH_WORDS = {
    "if", "then", "else", "elif", "fi", "for", "in", "do", "done", "while", "until", "case", "esac",
    "return", "exit", "local", "set", "export", "shift", "unset", "readonly", "declare", "[", "[[", "]]",
    "]", ":", ".", "printf", "echo", "cd", "pwd", "test", "read", "trap", "eval", "exec", "wait", "true",
    "false", "command", "type",
}

_RUNNERS = {"run", "Popen", "call", "check_call", "check_output", "execv", "execvp", "execvpe", "spawnvp"}
_MODULES = {"subprocess", "os", "shutil"}
_COMMAND = re.compile(r"[A-Za-z][\w.+-]*")


def base_group() -> set[str]:
    """The packages of ``[base]`` in scripts/bootstrap.sh, read from the script itself."""
    found = re.search(r'\[base\]="([^"]*)"', BOOTSTRAP.read_text())
    assert found, f"{BOOTSTRAP.relative_to(ROOT)} has no [base]=\"...\" package group"
    return set(found.group(1).split())


def _program(node: ast.expr, argvs: dict[str, str]) -> str | None:
    """The program an argv expression starts: ``["x", ...]``, ``[*argv, ...]`` or ``"x ..."``."""
    if isinstance(node, ast.List | ast.Tuple) and node.elts:
        first = node.elts[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value.split("/")[-1]
        if isinstance(first, ast.Starred) and isinstance(first.value, ast.Name):
            return argvs.get(first.value.id)
        if isinstance(first, ast.Name):  # PROMTOOL = "promtool"; run([PROMTOOL, ...])
            return argvs.get(first.id)
        return None
    if isinstance(node, ast.Name):
        return argvs.get(node.id)
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip():
        return node.value.split()[0].split("/")[-1]
    return None


def _argv_assignments(tree: ast.AST) -> dict[str, str]:
    """``name = ["prog", ...]`` and ``NAME = "prog"`` anywhere in the module: argv lists
    and program names later passed on."""
    argvs: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign):
            continue
        value = node.value
        if isinstance(value, ast.List | ast.Tuple) and value.elts:
            value = value.elts[0]
        if isinstance(value, ast.Constant) and isinstance(value.value, str) and _COMMAND.fullmatch(value.value):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    argvs[target.id] = value.value
    return argvs


def programs_started(source: str) -> Iterator[tuple[str, int]]:
    """(program, line) for every program a module starts or looks up on PATH."""
    tree = ast.parse(source)
    argvs = _argv_assignments(tree)
    imported = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and n.module in ("subprocess", "os", "shutil") for a in n.names}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in _MODULES:
            name = func.attr
        elif isinstance(func, ast.Name) and func.id in imported:
            name = func.id
        else:
            continue
        arg = node.args[0]
        if name == "which" and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            yield arg.value, node.lineno
        elif name == "which" and isinstance(arg, ast.Name) and arg.id in argvs:
            yield argvs[arg.id], node.lineno
        elif name in _RUNNERS:
            program = _program(arg, argvs)
            if program and _COMMAND.fullmatch(program):
                yield program, node.lineno


def shell_commands(text: str) -> Iterator[tuple[str, int]]:
    """(program, line) for the first word of every simple command of a shell script:
    after ``;``, ``&&``, ``||``, ``|``, ``$(``, ``then``, ``do``; not its own functions,
    builtins, variable assignments or ``for`` lists."""
    functions = set(re.findall(r"^\s*([A-Za-z_][\w-]*)\s*\(\)\s*\{", text, re.M))
    continued = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line, was_continued = re.sub(r"(^|\s)#.*$", "", raw), continued
        continued = raw.rstrip().endswith("\\")
        if was_continued:
            continue  # arguments of the previous line's command
        line = re.sub(r"'[^']*'", " _ ", line)
        line = re.sub(r'"(?:[^"\\]|\\.)*"', lambda m: m.group(0)[1:-1] if "$(" in m.group(0) else " _ ", line)
        for segment in re.split(r"\|\||&&|;|\||\$\(|`|\bthen\b|\bdo\b|\belse\b|\{|\(|!", line):
            words = segment.split()
            if words and words[0] == "for":
                continue
            while words and (re.fullmatch(r"[A-Za-z_]\w*=\S*", words[0]) or words[0] in _SH_WORDS):
                words = words[1:]
            if words and _COMMAND.fullmatch(words[0]) and words[0] not in functions:
                yield words[0], lineno


def tools_named(source: str) -> Iterator[tuple[str, int]]:
    """(program, line) for every word of the source that is a program of the table."""
    for lineno, line in enumerate(source.splitlines(), 1):
        for word in re.findall(r"[A-Za-z][\w.+-]*[\w+]", line):
            if word in TOOL_PACKAGES:
                yield word, lineno


def scanned_files() -> Iterator[Path]:
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")) if (ROOT / top).is_dir() else ():
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith(SKIPPED) and rel != THIS:
                yield path


@functools.cache
def uses() -> dict[str, list[str]]:
    """program -> ["file:line", ...] over the tests and the code they run."""
    found: dict[str, list[str]] = {}
    for path in scanned_files():
        rel = path.relative_to(ROOT).as_posix()
        source = path.read_text()
        hits = list(programs_started(source))
        if rel.startswith("tests/"):
            hits += list(tools_named(source))
        for program, lineno in sorted(set(hits), key=lambda h: h[1]):
            found.setdefault(program, []).append(f"{rel}:{lineno}")
    # A repository script a test starts (["./pre-image.sh", ...]) is no package: what it
    # runs is, so it is read like the scripts above.
    scripts = list(SHELL_SCRIPTS)
    for name in [p for p in found if p.endswith(".sh")]:
        found.pop(name)
        scripts += [path.relative_to(ROOT).as_posix() for path in ROOT.rglob(name) if ".venv" not in path.parts]
    for script in dict.fromkeys(scripts):
        for program, lineno in shell_commands((ROOT / script).read_text()):
            found.setdefault(program, []).append(f"{script}:{lineno}")
    return found


def test_the_scanner_finds_programs_it_must_find() -> None:
    """Positive control: known uses are found, and an unknown new tool would be."""
    found = uses()
    assert any(w.startswith("tests/integration/test_persist_luks.py") for w in found["mkfs.vfat"])
    assert any(w.startswith("tests/integration/test_persist_luks.py") for w in found["mke2fs"])  # via argv
    assert "mosquitto" in found and "strace" in found and "openssl" in found
    snippet = (
        "import shutil, subprocess\n"
        "argv = ['frobnicate', '-q']\n"
        "subprocess.run([*argv, 'x'])\n"
        "subprocess.check_output(['/usr/sbin/twiddle', '--all'])\n"
        "shutil.which('grommet')\n"
        "subprocess.run('widget --now', shell=True)\n"
        "GADGET = 'gadget'\n"
        "subprocess.Popen([GADGET, 'check'])\n"
    )
    assert sorted(p for p, _ in programs_started(snippet)) == ["frobnicate", "gadget", "grommet", "twiddle", "widget"]
    assert [p for p, _ in tools_named("# needs mkfs.vfat and pdftoppm.\n")] == ["mkfs.vfat", "pdftoppm"]
    script = (
        "set -eu\n"
        "say() { printf '%s\\n' \"$*\"; }\n"
        "X=$(frob --x) && say hi\n"
        "for p in a b; do gizmo \"$p\" | sort -u; done\n"
        "if [ -e x ]; then tool-a \\\n    --flag notatool; fi\n"
    )
    assert sorted(p for p, _ in shell_commands(script)) == ["frob", "gizmo", "sort", "tool-a"]
    assert "systemd-sysusers" in found and any("customize.sh" in w for w in found["systemd-sysusers"])


def test_every_program_the_suite_runs_is_known() -> None:
    known = TOOL_PACKAGES.keys() | SYSTEM_COMMANDS.keys() | NOT_RUN_BY_TESTS.keys() | PIP_TOOLS.keys()
    unknown = {p: w for p, w in uses().items() if p not in known}
    assert not unknown, "\n".join(
        f"{program} (started at {', '.join(where[:3])}): add \"{program}\": \"<debian package>\" to "
        f"TOOL_PACKAGES in {THIS} (`dpkg -S {program}` names the package) and that package to the "
        f"[base] group in scripts/bootstrap.sh"
        for program, where in sorted(unknown.items())
    )


def test_no_test_starts_a_program_marked_not_run_by_tests() -> None:
    in_tests = {p: w for p, w in uses().items() if p in NOT_RUN_BY_TESTS and any(x.startswith("tests/") for x in w)}
    assert not in_tests, f"tests start {sorted(in_tests)}: move them from NOT_RUN_BY_TESTS to TOOL_PACKAGES in {THIS}"


def test_every_program_the_suite_runs_comes_from_the_base_group() -> None:
    base, used = base_group(), uses()
    assert "mkfs.vfat" in used  # positive control: the program of issue 12 is seen
    missing = {tool: TOOL_PACKAGES[tool] for tool in used if tool in TOOL_PACKAGES and TOOL_PACKAGES[tool] not in base}
    assert not missing, "\n".join(
        f"{tool} (started at {', '.join(used[tool][:3])}) comes from {pkg}, which `make test` does not "
        f"install: add {pkg} to [base]=\"...\" in scripts/bootstrap.sh"
        for tool, pkg in sorted(missing.items())
    )


def test_pip_tools_are_installed_by_the_bootstrap() -> None:
    script = BOOTSTRAP.read_text()
    for tool, venv in PIP_TOOLS.items():
        assert venv in script, f"{tool}: scripts/bootstrap.sh does not create {venv}"


def test_make_test_installs_the_base_group() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: bootstrap\b", makefile, re.M)
    assert re.search(r"^bootstrap:\n\t@?scripts/bootstrap\.sh base$", makefile, re.M)


def _owners(programs: list[str]) -> dict[str, str]:
    """program -> the installed package that ships it, in one dpkg-query (merged /usr:
    /sbin and /usr/sbin alike; diversions are not owners)."""
    result = subprocess.run(["dpkg-query", "-S", *(f"bin/{p}" for p in programs)],
                            capture_output=True, text=True, check=False)
    owners: dict[str, str] = {}
    for line in result.stdout.splitlines():
        package, _, path = line.partition(": ")
        name = path.rsplit("/", 1)[-1]
        if name in programs and path.endswith(f"bin/{name}") and not package.startswith("diversion"):
            owners.setdefault(name, package.split(":")[0].split(",")[0])
    return owners


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="dpkg-query: not a Debian system")
def test_the_table_names_the_packages_dpkg_knows() -> None:
    """Where a program is installed, the table's package is the one dpkg says owns it."""
    table = {**TOOL_PACKAGES, **SYSTEM_COMMANDS}
    owners = _owners(sorted(p for p in table if shutil.which(p)))
    checked = len(owners)
    wrong = [f"{p}: table says {table[p]}, dpkg says {owner}" for p, owner in sorted(owners.items())
             if owner != table[p] and not table[p].startswith("python3")]
    assert checked >= 10, "dpkg-query found almost none of the suite's programs"
    assert not wrong, "; ".join(wrong)


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="dpkg-query: not a Debian system")
def test_system_commands_are_essential_packages() -> None:
    """SYSTEM_COMMANDS may only hold programs of packages every Debian system has."""
    packages = sorted({p for p in SYSTEM_COMMANDS.values() if not p.startswith("python3")})
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Essential} ${Priority}\n", *packages],
        capture_output=True, text=True, check=False,
    )
    not_essential = [
        line for line in result.stdout.splitlines() if line.split()[1:] != ["yes", "required"]
        and line.split()[-1] != "required"
    ]
    assert not not_essential, f"not Essential/required, so not on a fresh machine: {not_essential}"
