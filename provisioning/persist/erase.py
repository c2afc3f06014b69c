"""Crypto-erase of the persistent partition, and the status a privacy officer reads.

``cryptsetup erase`` wipes every LUKS2 keyslot: the volume key then exists nowhere,
and no key, found or remembered, opens the data again. The key file goes too, and the
data area is discarded where the card supports it. What was done is printed as a
record for the decommissioning log; ``verified`` is checked, not assumed.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clinicam.common.errors import StorageError
from clinicam.provisioning.persist.keys import FileKey, KeySource, default_sources
from clinicam.provisioning.persist.partition import (
    Layout,
    State,
    close_mapping,
    header,
    is_open,
    opens,
    probe,
    run,
    zero,
)


@dataclass
class EraseRecord:
    """What an erase did, line by line (no secret, no PHI: the partition holds none)."""

    device: str
    before: str
    uuid: str = ""
    actions: list[str] = field(default_factory=list)
    verified: bool = False

    def lines(self) -> list[str]:
        out = [f"device: {self.device}", f"before: {self.before}"]
        if self.uuid:
            out.append(f"luks-uuid: {self.uuid}")
        out += [f"done: {a}" for a in self.actions]
        out.append(f"verified: {'yes' if self.verified else 'NO'}")
        return out


def unmount(layout: Layout) -> list[str]:
    """Unmount every mount of the mapping; busy means the station still runs."""
    if not is_open(layout):
        return []
    found = subprocess.run(
        ["findmnt", "-n", "-o", "TARGET", "--source", str(layout.mapped)], capture_output=True, text=True, check=False
    )
    targets = found.stdout.split()
    for target in targets:
        run(["umount", target], what=f"unmount {target} (stop clinicam-station first: systemctl stop clinicam-station)")
    return targets


def erase(layout: Layout, sources: Sequence[KeySource] | None = None) -> EraseRecord:
    """Destroy the partition's keyslots and key; leave it for a fresh start next boot."""
    sources = list(sources if sources is not None else default_sources())
    unmounted = unmount(layout)
    closed = close_mapping(layout)
    state = probe(layout.device)
    # Zeroing a plain partition removes its label, and with it the by-label link.
    layout = dataclasses.replace(layout, device=layout.device.resolve())
    record = EraseRecord(device=str(layout.device), before=state.value)
    if unmounted:
        record.actions.append(f"unmounted {', '.join(unmounted)}")
    if closed:
        record.actions.append(f"closed {layout.mapped}")
    if state in (State.ENCRYPTED, State.ERASED):
        meta = header(layout.device)
        record.uuid = _uuid(layout.device)
        run(["cryptsetup", "erase", "--batch-mode", str(layout.device)], what=f"erase the keyslots of {layout.device}")
        record.actions.append("cryptsetup erase: every keyslot wiped, the volume key is gone")
        _discard_data(layout.device, meta, record)
    elif state in (State.PLAIN, State.OTHER):
        zero(layout.device)
        record.actions.append("not encrypted: the whole partition overwritten with zeros (and discarded)")
    for source in sources:
        if isinstance(source, FileKey):
            gone = source.destroy()
            record.actions.append(f"key file {source.path} {'overwritten and removed' if gone else 'absent'}")
    record.verified = _verify(layout.device, sources)
    if not record.verified:
        raise StorageError(f"erase of {layout.device} could not be verified: " + "; ".join(record.lines()))
    return record


def _uuid(device: Path) -> str:
    return run(["cryptsetup", "luksUUID", str(device)], what="read the LUKS UUID").strip()


def _discard_data(device: Path, meta: dict, record: EraseRecord) -> None:
    offset = int(meta.get("segments", {}).get("0", {}).get("offset", 0))
    if not offset:
        return
    result = subprocess.run(
        ["blkdiscard", "-f", "-o", str(offset), str(device)], capture_output=True, text=True, check=False
    )
    record.actions.append(
        "data area discarded" if result.returncode == 0 else "data area not discarded (the device does not support it)"
    )


def _verify(device: Path, sources: Sequence[KeySource]) -> bool:
    state = probe(device)
    if state is State.ERASED:
        return not any(s.available() and opens(device, s.key()) for s in sources)
    return state is State.BLANK


def status(layout: Layout, sources: Sequence[KeySource] | None = None) -> dict[str, str]:
    """The partition's state for ``clinicam persist status`` (no secret is read out)."""
    sources = list(sources if sources is not None else default_sources())
    out = {"device": str(layout.device)}
    state = probe(layout.device)
    out["state"] = state.value
    if state in (State.ENCRYPTED, State.ERASED):
        meta = header(layout.device)
        segment = meta.get("segments", {}).get("0", {})
        out["cipher"] = str(segment.get("encryption", "?"))
        out["keyslots"] = str(len(meta.get("keyslots", {})))
        out["luks-uuid"] = _uuid(layout.device)
    out["mapping"] = f"{layout.mapped} {'open' if is_open(layout) else 'closed'}"
    out["key-sources"] = ", ".join(s.name for s in sources if s.available()) or "none"
    return out
