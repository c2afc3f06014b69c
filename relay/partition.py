"""Which relay worker serves which station (DESIGN §5, "Scaling the relay").

Mosquitto's ``$share`` hands out *messages* round-robin, so one capture's parts would
be scattered over several workers. Instead every worker subscribes to the whole tree
and keeps only the stations whose stable hash falls in its share: worker ``k`` of
``N`` takes the devices with ``hash(device) % N == k``. A standby started for worker
``k`` simply takes share ``k``; the stations re-send whatever the dead worker had not
acknowledged, and the sinks' idempotence on ``(device, capture_id)`` absorbs overlap.

The hash must be the same in every process and every Python version, so it is
SHA-256 of the device id, never the built-in ``hash()`` (randomised per process).
"""

from __future__ import annotations

from dataclasses import dataclass

from clinicam.protocol.presence import device_bucket

__all__ = ["Partition", "device_bucket"]


@dataclass(frozen=True)
class Partition:
    """The shares of stations one relay process serves.

    ``worker`` is this process's share (0-based) among ``workers``; ``standby_for``
    lists the shares of dead workers it stands in for as well (config
    ``[relay] standby_for``).
    """

    worker: int = 0
    workers: int = 1
    standby_for: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        for share in (self.worker, *self.standby_for):
            if not 0 <= share < self.workers:
                raise ValueError(f"shares must be in 0..{self.workers - 1}, got {share}")

    @property
    def shares(self) -> frozenset[int]:
        """The buckets this process serves."""
        return frozenset((self.worker, *self.standby_for))

    def owns(self, device: str) -> bool:
        """True when this process must handle (and acknowledge) ``device``'s traffic."""
        return self.workers == 1 or device_bucket(device, self.workers) in self.shares
