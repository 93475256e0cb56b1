"""Group commit: many store commands in one Raft log entry.

A Raft round trip per write would bound throughput by latency, and every
log entry costs a fixed amount of work (messages, syscalls, ticks) however
few commands it carries. So commands proposed on the event loop wait in a
pending batch while the previous one is in flight, and then a little longer:
the clients just answered send their next commands within a client round
trip. The committer expects as many commands as were outstanding at most
(pending plus in flight) during the last round, that is, about the number
of concurrent clients, and sends as soon as that many are pending, or after
`max_linger`, whichever comes first. With one client a command goes out at
once; with N, batches carry about N.

Measured on a 2-core VM: each log entry costs the leader's loop a fixed
amount of Raft messaging (pickling, sealing, syscalls, ticks: about 1 ms
when frames were sealed with Fernet and compressed), so lingering pays even
though the loop then sometimes waits out `max_linger` idle; sending
whatever is pending whenever nothing is in flight halved throughput.

Linearizable reads share barriers the same way: every read waiting when a
batch goes out is answered by one Barrier command in that batch, which
proves everything committed before the reads began is applied here.

Runs on the event loop the Raft node runs on; completions arrive on it too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ha.errors import NotCommitted, OutcomeUnknown, StoreError
from ha.metrics import StoreMetrics
from ha.raft_node import ProposalError
from ha.storepb import internal_pb2

BARRIER_COMMAND = internal_pb2.Command(barrier=internal_pb2.Barrier()).SerializeToString()
# A read barrier that failed (an election, a leader change) is tried again
# for this long: it changes nothing, so trying again is always safe.
BARRIER_RETRY_FOR = 5.0

Callback = Callable[[list[bytes] | None, ProposalError | None], None]


class Proposer(Protocol):
    def submit(self, commands: list[bytes], callback: Callback) -> None: ...

    def can_propose(self) -> bool: ...


@dataclass
class _Batch:
    commands: list[bytes]
    futures: list[asyncio.Future[bytes]]
    started: float
    # When its oldest command was first proposed (retries included).
    enqueued: float
    done: bool = False
    timer: asyncio.TimerHandle | None = None


@dataclass
class GroupCommitOptions:
    max_commands: int = 1024
    # Keep every entry well under RaftConfig.append_entries_max_bytes.
    max_bytes: int = 1 << 20
    max_in_flight: int = 2
    # Longest wait for the expected commands before sending a batch. On a
    # saturated leader commands arrive slower than `expected` assumes, and
    # each entry costs ~1.4 ms of the leader's CPU whatever it carries:
    # measured at c=64 on 2 cores, 10 ms gave 13 puts (6 pod creates) per
    # entry and 1,050-1,270 puts/s, 25 ms gave 34 (15) and 1,370-1,500
    # puts/s with lower p50 and p99. With one client nothing waits.
    max_linger: float = 0.025
    # A proposal with no result after this long fails as OutcomeUnknown.
    timeout: float = 5.0
    # How often to look again for a leader while none can take proposals.
    leader_poll: float = 0.01


@dataclass
class GroupCommitter:
    proposer: Proposer
    loop: asyncio.AbstractEventLoop
    metrics: StoreMetrics
    options: GroupCommitOptions = field(default_factory=GroupCommitOptions)

    def __post_init__(self) -> None:
        self._pending: list[tuple[bytes, asyncio.Future[bytes], float]] = []
        self._pending_bytes = 0
        self._barrier: asyncio.Future[bytes] | None = None
        self._in_flight = 0
        self._flush_handle: asyncio.Handle | None = None
        self._flush_at = 0.0
        # How many commands to wait for before sending: the most that were
        # outstanding (pending + in flight) during the last round.
        self._expected = 1
        self._peak = 0
        self._in_flight_commands = 0
        self._closed = False
        self._paused = False

    async def propose(self, command: bytes) -> bytes:
        """The state machine's result for `command`, once applied here."""
        fut = self._enqueue(command)
        return await fut

    async def barrier(self) -> None:
        """Wait until everything committed before this call is applied here.
        A barrier lost to a leader change is proposed again (a read has no
        outcome to be unsure of); NotCommitted once that has failed for
        BARRIER_RETRY_FOR seconds."""
        deadline = time.monotonic() + BARRIER_RETRY_FOR
        delay = 0.02
        while True:
            if self._barrier is None or self._barrier.done():
                self._barrier = self._enqueue(BARRIER_COMMAND)
                self.metrics.read_barriers.inc()
            try:
                await asyncio.shield(self._barrier)
                return
            except (OutcomeUnknown, NotCommitted) as e:
                if self._closed or time.monotonic() + delay > deadline:
                    raise NotCommitted(f"no read barrier could be committed: {e}") from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    def pause(self) -> None:
        """Hold new batches (commands still queue) until `resume`: lets a
        follower catch up fully, as a leadership transfer needs."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._schedule()

    def close(self) -> None:
        self._closed = True
        for _, fut, _ in self._pending:
            if not fut.done():
                fut.set_exception(NotCommitted("the store is shutting down"))
        self._pending.clear()

    def _enqueue(self, command: bytes) -> asyncio.Future[bytes]:
        fut: asyncio.Future[bytes] = self.loop.create_future()
        if self._closed:
            fut.set_exception(NotCommitted("the store is shutting down"))
            return fut
        self._pending.append((command, fut, time.monotonic()))
        self._pending_bytes += len(command)
        self._peak = max(self._peak, len(self._pending) + self._in_flight_commands)
        self._schedule()
        return fut

    def _schedule(self, delay: float | None = None, now: bool = False) -> None:
        """Arrange the next flush; `now`: flush at once if it is due."""
        if not self._pending or self._paused:
            return
        full = len(self._pending) >= self.options.max_commands or self._pending_bytes >= self.options.max_bytes
        if self._in_flight >= self.options.max_in_flight and not full:
            return  # a completing batch will flush these
        if delay is None:
            ready = full or len(self._pending) >= self._expected
            delay = 0.0 if ready else self.options.max_linger
        if now and delay == 0:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
            self._flush()
            return
        when = self.loop.time() + delay
        if self._flush_handle is not None:
            if when >= self._flush_at:
                return
            self._flush_handle.cancel()
        self._flush_at = when
        if delay > 0:
            self._flush_handle = self.loop.call_at(when, self._flush)
        else:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._pending or self._paused:
            return
        if not self.proposer.can_propose():
            self._fail_expired_pending()
            self._schedule(self.options.leader_poll)
            return
        commands: list[bytes] = []
        futures: list[asyncio.Future[bytes]] = []
        size = 0
        taken = 0
        enqueued = time.monotonic()
        for command, fut, queued_at in self._pending:
            if commands and (
                len(commands) >= self.options.max_commands or size + len(command) > self.options.max_bytes
            ):
                break
            taken += 1
            self._pending_bytes -= len(command)
            if fut.done():  # cancelled by its caller
                continue
            commands.append(command)
            futures.append(fut)
            size += len(command)
            enqueued = min(enqueued, queued_at)
        del self._pending[:taken]
        if self._barrier is not None and self._barrier in futures:
            self._barrier = None
        if commands:
            self._send(_Batch(commands, futures, time.monotonic(), enqueued))
        self._schedule()

    def _end_round(self, batch: _Batch) -> None:
        self._in_flight -= 1
        self._in_flight_commands -= len(batch.futures)
        self._expected = max(1, min(self._peak, self.options.max_commands))
        # Forget slowly: a round sees only part of the clients' cycle.
        self._peak = max(len(self._pending) + self._in_flight_commands, self._peak * 7 // 8)

    def _send(self, batch: _Batch) -> None:
        self._in_flight += 1
        self._in_flight_commands += len(batch.futures)
        self.metrics.batch_size.observe(len(batch.commands))
        batch.timer = self.loop.call_later(self.options.timeout, self._expire, batch)

        try:
            self.proposer.submit(batch.commands, lambda results, error: self._complete(batch, results, error))
        except Exception as e:  # the Raft queue refused it synchronously
            self._complete(batch, None, ProposalError(-1, f"could not propose: {e}"))

    def _complete(self, batch: _Batch, results: list[bytes] | None, error: ProposalError | None) -> None:
        if batch.done:
            return  # it timed out already
        batch.done = True
        if batch.timer is not None:
            batch.timer.cancel()
        self._end_round(batch)
        if error is not None and error.never_appended and self._requeue(batch):
            return
        # Send the next batch before waking this one's callers: its Raft
        # round then overlaps the work of answering them.
        self._schedule(now=True)
        elapsed = time.monotonic() - batch.started
        if error is None and results is not None and len(results) == len(batch.futures):
            self.metrics.proposals_committed.inc(len(batch.futures))
            self.metrics.proposal_duration.observe(elapsed, len(batch.futures))
            for fut, result in zip(batch.futures, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
        else:
            exc = _store_error(error)
            self.metrics.proposals_failed.labels(type(exc).__name__).inc(len(batch.futures))
            for fut in batch.futures:
                if not fut.done():
                    fut.set_exception(exc)

    def _requeue(self, batch: _Batch) -> bool:
        """Propose a batch no log holds again (the master it was forwarded
        to was not the leader, or no leader was known: an election, a
        leadership transfer), first in line, until it is `timeout` old."""
        if self._closed or time.monotonic() - batch.enqueued > self.options.timeout:
            return False
        again = [(c, f, batch.enqueued) for c, f in zip(batch.commands, batch.futures, strict=True) if not f.done()]
        self._pending[:0] = again
        self._pending_bytes += sum(len(c) for c, _, _ in again)
        self.metrics.proposals_retried.inc(len(again))
        self._schedule(self.options.leader_poll)
        return True

    def _expire(self, batch: _Batch) -> None:
        if batch.done:
            return
        batch.done = True
        self._end_round(batch)
        self.metrics.proposals_failed.labels("Timeout").inc(len(batch.futures))
        exc = OutcomeUnknown(f"no result within {self.options.timeout:g}s; the command may still be applied")
        for fut in batch.futures:
            if not fut.done():
                fut.set_exception(exc)
        self._schedule()

    def _fail_expired_pending(self) -> None:
        """Commands that waited for a leader longer than the timeout fail;
        they never left this master, so retrying them is safe."""
        cutoff = time.monotonic() - self.options.timeout
        keep = []
        for item in self._pending:
            command, fut, enqueued = item
            if enqueued < cutoff:
                self._pending_bytes -= len(command)
                if not fut.done():
                    fut.set_exception(NotCommitted("no leader could be reached"))
                if fut is self._barrier:
                    self._barrier = None
            else:
                keep.append(item)
        self._pending = keep


def _store_error(error: ProposalError | None) -> StoreError:
    if error is None:
        return OutcomeUnknown("the batch's results were lost")
    if error.outcome_unknown:
        return OutcomeUnknown(str(error))
    return NotCommitted(f"not committed: {error}")
