"""Count occurrences of byte strings in another process's memory via /proc/<pid>/mem.

Needs ptrace rights over the target (root, or CAP_SYS_PTRACE: the station makes itself
non-dumpable, which shuts out everyone else). Regions that cannot be read (guard pages,
``[vvar]``) are skipped and counted, so a test can tell a blind scan from a clean one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class Scan:
    counts: dict[bytes, int]
    scanned_bytes: int = 0
    unreadable: list[str] = field(default_factory=list)


def _regions(pid: int) -> list[tuple[int, int, str]]:
    out = []
    with open(f"/proc/{pid}/maps", encoding="ascii", errors="replace") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            name = fields[5] if len(fields) > 5 else ""
            if fields[1].startswith("r") and name not in ("[vvar]", "[vsyscall]"):
                out.append((start, end, name))
    return out


def scan(pid: int, needles: list[bytes]) -> Scan:
    """How many times each needle occurs in the readable memory of ``pid``."""
    result = Scan({n: 0 for n in needles})
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        for start, end, name in _regions(pid):
            try:
                data = os.pread(fd, end - start, start)
            except OSError:
                result.unreadable.append(name or hex(start))
                continue
            result.scanned_bytes += len(data)
            for n in needles:
                result.counts[n] += data.count(n)
    finally:
        os.close(fd)
    return result
