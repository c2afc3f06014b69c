"""Which relay process serves a worker's share right now (DESIGN §5, relay presence).

Several processes may be configured for the same ``worker``: the one serving it and
standbys, each with its own identity. Each publishes its presence; the decision below
is the same in every process, so exactly one of them serves: a process serves when no
other process is online for its worker's share, or when its own claim is older than
every other claim (claims are ordered by ``(since, relay id)``). A standby's claim is
"now", so it never takes a live worker's place; it takes over as soon as that
worker's presence says ``offline`` (its will, when it dies or loses the broker). Two
processes that start at the same moment both serve for an instant; the younger claim
then steps down, and the sinks' idempotence absorbs the overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clinicam.protocol.presence import Presence, PresenceBoard
from clinicam.relay.partition import Partition


@dataclass
class Arbiter:
    """One relay process's view of its worker share and its own claim on it."""

    relay_id: str
    instance: str
    partition: Partition
    exclusive: bool = True  # False behind a sticky $share broker: every worker serves
    board: PresenceBoard = field(default_factory=PresenceBoard)
    since: str | None = None  # set while this process serves

    def presence(self, state: str) -> Presence:
        p = self.partition
        shares = tuple(sorted(p.shares)) if self.exclusive else (0,)
        return Presence(state, self.instance, p.worker, p.workers if self.exclusive else 1, shares,
                        self.since or "")

    def rivals(self) -> dict[str, Presence]:
        """Other processes online for this worker's share."""
        p = self.partition
        return self.board.claims(p.worker, p.workers, besides=self.instance)

    def should_serve(self, now_stamp: str) -> bool:
        if not self.exclusive:
            return True
        mine = (self.since or now_stamp, self.relay_id)
        return all((c.since, rid) > mine for rid, c in self.rivals().items())
