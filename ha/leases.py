"""TTL leases of the store (etcd's lessor), as replicated state.

Time here is the store's lease clock: milliseconds proposed by the leader in
LeaseTick commands, never read from the local clock, so every replica expires
the same leases at the same log position.

A lease granted or kept alive has no deadline yet: the next tick gives it
`tick.now + ttl`. Renewals thus count from a moment at or after they happened,
and a lease ends between ttl and ttl + tick interval after its last renewal,
never before. A new leader's first tick promotes every lease to a full TTL
from its own clock, so a failover, or masters whose clocks differ, never ends
a lease that was being kept alive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PENDING = 0  # deadline of a lease renewed since the last tick


@dataclass
class Lease:
    id: int
    ttl: int  # seconds
    deadline_ms: int = PENDING
    keys: set[bytes] = field(default_factory=set)


class LeaseTable:
    def __init__(self) -> None:
        self._leases: dict[int, Lease] = {}
        self.clock_ms = 0
        self.next_id = 1

    def __contains__(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def __len__(self) -> int:
        return len(self._leases)

    def get(self, lease_id: int) -> Lease | None:
        return self._leases.get(lease_id)

    def all(self) -> list[Lease]:
        return [self._leases[i] for i in sorted(self._leases)]

    def grant(self, lease_id: int, ttl: int) -> Lease:
        """Create a lease; the caller checked that `lease_id` is free."""
        if lease_id == 0:
            while self.next_id in self._leases:
                self.next_id += 1
            lease_id = self.next_id
        self.next_id = max(self.next_id, lease_id + 1)
        lease = Lease(lease_id, ttl)
        self._leases[lease_id] = lease
        return lease

    def renew(self, lease: Lease) -> None:
        lease.deadline_ms = PENDING

    def remove(self, lease_id: int) -> Lease | None:
        return self._leases.pop(lease_id, None)

    def attach(self, lease_id: int, key: bytes) -> None:
        if lease_id:
            self._leases[lease_id].keys.add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)

    def tick(self, now_ms: int, promote: bool) -> list[Lease]:
        """Advance the clock and return the leases that expired (still in the
        table: the caller deletes their keys, then removes them)."""
        self.clock_ms = max(self.clock_ms, now_ms)
        clock = self.clock_ms
        expired = []
        for lease in self._leases.values():
            full = clock + lease.ttl * 1000
            if lease.deadline_ms == PENDING or promote:
                lease.deadline_ms = max(lease.deadline_ms, full)
            elif lease.deadline_ms <= clock:
                expired.append(lease)
        expired.sort(key=lambda le: le.id)
        return expired

    def remaining_seconds(self, lease: Lease) -> int:
        if lease.deadline_ms == PENDING:
            return lease.ttl
        return max(-1, (lease.deadline_ms - self.clock_ms) // 1000)

    def next_deadline_ms(self) -> int | None:
        """The earliest deadline, or None when no lease waits to expire."""
        deadlines = [le.deadline_ms for le in self._leases.values() if le.deadline_ms != PENDING]
        return min(deadlines) if deadlines else None

    def load(self, clock_ms: int, next_id: int, leases: list[Lease]) -> None:
        self.clock_ms = clock_ms
        self.next_id = next_id
        self._leases = {le.id: le for le in leases}
