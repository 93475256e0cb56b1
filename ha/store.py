"""The Store: the store's API for the rest of raftkube (and for its own gRPC
services), etcd-shaped and asyncio-native.

Writes go through group commit into the Raft log and return once applied on
this master. Reads are linearizable by default: they wait for a read barrier
(coalesced, see group_commit) and then read local state; `serializable`
reads skip the barrier. Watches read the event history of the local state
machine, so a watch on a follower sees every revision once, in order, across
leader changes.

The leader also runs the store's own housekeeping: lease clock ticks (with
promotion after a leader change) and compaction of old history. Every master
announces its gRPC address in the replicated member list.

Everything here runs on one event loop, the one the Raft node runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message

from ha import keys, validation
from ha.errors import CommandFailed, ErrorCode, NotCommitted, NotLeader, OutcomeUnknown
from ha.group_commit import GroupCommitOptions, GroupCommitter
from ha.metrics import StoreMetrics
from ha.raft_node import ProposalError, RaftNode
from ha.state_machine import StateMachine
from ha.storepb import cluster_pb2, internal_pb2, kv_pb2
from ha.watch_hub import WatchHub

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Message)


@dataclass
class StoreOptions:
    member_id: str
    grpc_address: str = ""
    # id -> raft address of the masters given at start (--peer); the
    # replicated member list takes over as members announce themselves.
    initial_members: dict[str, str] | None = None
    lease_tick_interval: float = 0.5
    # Keep this many revisions of history for watches and past reads.
    history_revisions: int = 50_000
    # Every master compacts at once, pausing for the history it forgets
    # (~2 us per revision): often, so that each pause stays short.
    compaction_check_interval: float = 1.0
    announce_interval: float = 1.0
    watch_batch_events: int = 1000
    group_commit: GroupCommitOptions | None = None


class Store:
    def __init__(
        self,
        node: RaftNode,
        state_machine: StateMachine,
        options: StoreOptions,
        metrics: StoreMetrics,
        loop: asyncio.AbstractEventLoop,
    ):
        self.node = node
        self.sm = state_machine
        self.options = options
        self.metrics = metrics
        self.loop = loop
        self.committer = GroupCommitter(node, loop, metrics, options.group_commit or GroupCommitOptions())
        self.watch_hub = WatchHub(state_machine, loop)
        self.watchers = 0
        self._promote_leases = False
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # -- hooks the Raft node calls ----------------------------------------------

    def on_applied(self, applied_index: int) -> None:
        if not self._closed:
            self.watch_hub.notify()

    def on_role_change(self, role: str) -> None:
        if role == "leader":
            self._promote_leases = True

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            self.loop.create_task(self._every(self.options.lease_tick_interval, self._tick_leases)),
            self.loop.create_task(self._every(self.options.compaction_check_interval, self._compact_history)),
            self.loop.create_task(self._announce_loop()),
        ]

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.committer.close()
        self.watch_hub.close()

    async def _every(self, interval: float, job: Any) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except (NotCommitted, OutcomeUnknown) as e:
                log.debug("housekeeping %s: %s", job.__name__, e)
            except CommandFailed as e:
                log.info("housekeeping %s refused: %s", job.__name__, e)
            except Exception:
                log.exception("housekeeping %s failed", job.__name__)

    # -- proposals ---------------------------------------------------------------

    async def _propose(self, command: internal_pb2.Command) -> internal_pb2.CommandResult:
        validation.check_command(command)
        raw = command.SerializeToString()
        self.sm.proposing(raw, command)
        try:
            result = internal_pb2.CommandResult.FromString(await self.committer.propose(raw))
        finally:
            self.sm.proposed(raw)
        if result.WhichOneof("result") == "error":
            raise CommandFailed.from_error(result.error)
        return result

    def _stamp(self, resp: R) -> R:
        header = resp.header  # type: ignore[attr-defined]
        header.member_id = self.options.member_id
        header.raft_term = self.node.term
        return resp

    def header(self) -> kv_pb2.ResponseHeader:
        return kv_pb2.ResponseHeader(
            revision=self.sm.revision, member_id=self.options.member_id, raft_term=self.node.term
        )

    # -- the KV API -----------------------------------------------------------

    async def put(self, req: kv_pb2.PutRequest) -> kv_pb2.PutResponse:
        result = await self._propose(internal_pb2.Command(put=req))
        return self._stamp(result.put)

    async def delete_range(self, req: kv_pb2.DeleteRangeRequest) -> kv_pb2.DeleteRangeResponse:
        result = await self._propose(internal_pb2.Command(delete_range=req))
        return self._stamp(result.delete_range)

    async def txn(self, req: kv_pb2.TxnRequest) -> kv_pb2.TxnResponse:
        result = await self._propose(internal_pb2.Command(txn=req))
        return self._stamp(result.txn)

    async def compact(self, req: kv_pb2.CompactionRequest) -> kv_pb2.CompactionResponse:
        result = await self._propose(internal_pb2.Command(compaction=req))
        return self._stamp(result.compaction)

    async def range(self, req: kv_pb2.RangeRequest) -> kv_pb2.RangeResponse:
        validation.check_range(req)
        if req.continue_token:
            try:
                revision, next_key, range_end = keys.decode_continue(req.continue_token)
            except ValueError as e:
                raise CommandFailed(ErrorCode.INVALID_ARGUMENT, str(e)) from None
            paged = kv_pb2.RangeRequest()
            paged.CopyFrom(req)
            paged.key, paged.range_end, paged.revision, paged.continue_token = next_key, range_end, revision, ""
            req = paged
        if not req.serializable:
            await self.committer.barrier()
        resp = self.sm.range(req)
        if resp.more and resp.kvs:
            at = req.revision or resp.header.revision
            resp.continue_token = keys.encode_continue(at, resp.kvs[-1].key + b"\0", req.range_end)
        return self._stamp(resp)

    async def watch(self, req: kv_pb2.WatchRequest) -> AsyncIterator[kv_pb2.WatchResponse]:
        """Events from req.start_revision (or now) on, until cancelled.
        Raises CommandFailed(COMPACTED) if history no longer reaches back."""
        validation.check_key(req.key)
        validation.check_range_end(req.range_end)
        next_rev = req.start_revision or self.sm.revision + 1
        if next_rev <= self.sm.compact_revision:
            self.sm.events_since(next_rev, req.key, req.range_end, 1)  # raises COMPACTED
        no_put = kv_pb2.WatchRequest.NOPUT in req.filters
        no_delete = kv_pb2.WatchRequest.NODELETE in req.filters
        progress = req.progress_notify_seconds
        self.watchers += 1
        try:
            yield kv_pb2.WatchResponse(header=self.header(), created=True)
            last_sent = time.monotonic()
            while not self._closed:
                events, reached = self.sm.events_since(
                    next_rev, req.key, req.range_end, self.options.watch_batch_events
                )
                next_rev = max(next_rev, reached + 1)
                resp = kv_pb2.WatchResponse()
                for revision, _, key, kv, prev_kv in events:  # KeyValues encoded (ha.keyspace)
                    if kv is None:
                        if no_delete:
                            continue
                        ev = resp.events.add(type=kv_pb2.Event.DELETE)
                        ev.kv.key, ev.kv.mod_revision = key, revision
                    else:
                        if no_put:
                            continue
                        ev = resp.events.add(type=kv_pb2.Event.PUT)
                        ev.kv.MergeFromString(kv)
                    if req.prev_kv and prev_kv is not None:
                        ev.prev_kv.MergeFromString(prev_kv)
                if resp.events:
                    resp.header.CopyFrom(self.header())
                    resp.header.revision = reached
                    yield resp
                    last_sent = time.monotonic()
                    continue
                now = time.monotonic()
                if progress > 0 and now - last_sent >= progress:
                    yield kv_pb2.WatchResponse(header=self.header())
                    last_sent = now
                if next_rev > self.sm.revision:
                    wait = progress - (now - last_sent) if progress > 0 else 1.0
                    await self.watch_hub.wait(req.key, req.range_end, max(0.01, min(wait, 1.0)))
        finally:
            self.watchers -= 1

    # -- leases ------------------------------------------------------------------

    async def lease_grant(self, req: kv_pb2.LeaseGrantRequest) -> kv_pb2.LeaseGrantResponse:
        result = await self._propose(internal_pb2.Command(lease_grant=req))
        return self._stamp(result.lease_grant)

    async def lease_revoke(self, req: kv_pb2.LeaseRevokeRequest) -> kv_pb2.LeaseRevokeResponse:
        result = await self._propose(internal_pb2.Command(lease_revoke=req))
        return self._stamp(result.lease_revoke)

    async def lease_keep_alive(self, req: kv_pb2.LeaseKeepAliveRequest) -> kv_pb2.LeaseKeepAliveResponse:
        result = await self._propose(internal_pb2.Command(lease_keep_alive=req))
        return self._stamp(result.lease_keep_alive)

    async def lease_time_to_live(self, req: kv_pb2.LeaseTimeToLiveRequest) -> kv_pb2.LeaseTimeToLiveResponse:
        await self.committer.barrier()
        return self._stamp(self.sm.lease_time_to_live(req))

    async def _tick_leases(self) -> None:
        if not self.node.is_leader or (self.sm.lease_count() == 0 and not self._promote_leases):
            return
        promote = self._promote_leases
        tick = internal_pb2.LeaseTick(
            now_ms=int(time.time() * 1000),
            interval_ms=int(self.options.lease_tick_interval * 1000),
            promote=promote,
        )
        await self._propose(internal_pb2.Command(lease_tick=tick))
        if promote:
            self._promote_leases = False

    # -- history -------------------------------------------------------------------

    async def _compact_history(self) -> None:
        if not self.node.is_leader:
            return
        target = self.sm.revision - self.options.history_revisions
        if target > self.sm.compact_revision:
            await self._propose(internal_pb2.Command(compaction=kv_pb2.CompactionRequest(revision=target)))

    # -- cluster -------------------------------------------------------------------

    def members(self) -> list[cluster_pb2.Member]:
        """The replicated member list, with the masters given at start that
        have not announced themselves yet and that Raft still counts."""
        known = {m.id: m for m in self.sm.members()}
        addresses = {m.raft_address for m in known.values()}
        voting = set(self.node.member_addresses())
        for member_id, address in (self.options.initial_members or {}).items():
            if member_id not in known and address not in addresses and address in voting:
                known[member_id] = cluster_pb2.Member(id=member_id, raft_address=address)
        return [known[i] for i in sorted(known)]

    def member_id_of(self, raft_address: str | None) -> str:
        if not raft_address:
            return ""
        for m in self.members():
            if m.raft_address == raft_address:
                return m.id
        return raft_address

    def _member(self, member_id: str) -> cluster_pb2.Member | None:
        return next((m for m in self.members() if m.id == member_id), None)

    async def _announce_loop(self) -> None:
        # Promptly at start (other masters forward to this one by the gRPC
        # address it announces), then now and again in case it changed.
        while not await self._announced():
            await asyncio.sleep(0.1)
        await self._every(self.options.announce_interval, self._announce)

    async def _announced(self) -> bool:
        try:
            await self._announce()
        except (NotCommitted, OutcomeUnknown, CommandFailed):
            return False
        me = next((m for m in self.sm.members() if m.id == self.options.member_id), None)
        return me is not None and me.grpc_address == self.options.grpc_address

    async def _announce(self) -> None:
        me = cluster_pb2.Member(
            id=self.options.member_id,
            raft_address=self.node.address,
            grpc_address=self.options.grpc_address,
        )
        if not self.node.can_propose():
            return
        current = next((m for m in self.sm.members() if m.id == me.id), None)
        if current != me:
            await self._propose(internal_pb2.Command(member_set=me))

    async def status(self) -> cluster_pb2.StatusResponse:
        raft = self.node.raft_status()
        resp = cluster_pb2.StatusResponse(
            id=self.options.member_id,
            role=raft["role"],
            term=raft["term"],
            leader_id=self.member_id_of(raft["leader"]),
            commit_index=raft["commit_index"],
            applied_index=raft["applied_index"],
            has_quorum=raft["has_quorum"],
            quorum_size=raft["quorum_size"],
            compact_revision=self.sm.compact_revision,
            raft_log_entries=raft["log_entries"],
            raft_address=raft["address"],
            ready=raft["ready"],
        )
        for peer in raft["peers"]:
            resp.peers.add(
                id=self.member_id_of(peer["address"]),
                raft_address=peer["address"],
                connected=peer["connected"],
                match_index=peer["match_index"],
                next_index=peer["next_index"],
            )
        resp.header.CopyFrom(self.header())
        return resp

    async def member_list(self) -> cluster_pb2.MemberListResponse:
        await self.committer.barrier()
        return cluster_pb2.MemberListResponse(header=self.header(), members=self.members())

    def _require_leader(self, what: str) -> None:
        if not self.node.is_leader:
            raise NotLeader(f"{what} runs on the leader", self.member_id_of(self.node.leader_address))

    async def member_add(self, req: cluster_pb2.MemberAddRequest) -> cluster_pb2.MemberAddResponse:
        if not req.id or not req.raft_address:
            raise CommandFailed(ErrorCode.INVALID_ARGUMENT, "a new member needs an id and a raft address")
        _check_address(req.raft_address)
        self._require_leader("adding a member")
        await self.committer.barrier()
        for m in self.members():
            if m.id == req.id or m.raft_address == req.raft_address:
                raise CommandFailed(ErrorCode.INVALID_ARGUMENT, f"{m.id} ({m.raft_address}) is already a member")
        member = cluster_pb2.Member(id=req.id, raft_address=req.raft_address, grpc_address=req.grpc_address)
        await self._propose(internal_pb2.Command(member_set=member))
        await self._membership(self.node.add_member, req.raft_address, present=True)
        return cluster_pb2.MemberAddResponse(header=self.header(), member=member, members=self.members())

    async def member_remove(self, req: cluster_pb2.MemberRemoveRequest) -> cluster_pb2.MemberRemoveResponse:
        self._require_leader("removing a member")
        await self.committer.barrier()
        member = self._member(req.id)
        if member is None:
            raise CommandFailed(ErrorCode.MEMBER_NOT_FOUND, f"member {req.id!r} not found")
        if self.node.address == member.raft_address:
            # Raft cannot remove its own leader: hand leadership on, and let
            # the new leader do it (the service forwards the request there).
            await self._transfer_away_from(member.raft_address)
            self._require_leader("removing a member")
        await self._membership(self.node.remove_member, member.raft_address, present=False)
        with contextlib.suppress(CommandFailed):
            await self._propose(internal_pb2.Command(member_remove=cluster_pb2.MemberRemoveRequest(id=req.id)))
        return cluster_pb2.MemberRemoveResponse(header=self.header(), members=self.members())

    async def _membership(self, change: Any, address: str, present: bool) -> None:
        """Make `address` a voting member (present) or not, on the leader;
        an ambiguous outcome is settled by Raft's own configuration."""
        deadline = time.monotonic() + self.committer.options.timeout
        while True:
            done: asyncio.Future[ProposalError | None] = self.loop.create_future()

            def callback(error: ProposalError | None, done: asyncio.Future[ProposalError | None] = done) -> None:
                if not done.done():
                    done.set_result(error)

            change(address, callback)
            try:
                error = await asyncio.wait_for(done, max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                error = ProposalError(-1, "timed out")
            if error is None or (address in self.node.member_addresses()) == present:
                return
            if not self.node.is_leader:
                raise NotLeader(
                    "lost leadership during a membership change", self.member_id_of(self.node.leader_address)
                )
            if time.monotonic() > deadline:
                if error.outcome_unknown or error.reason == -1:
                    raise OutcomeUnknown(f"membership change: {error}")
                raise NotCommitted(
                    f"membership change refused: {error} (one change at a time, after the leader's first commit)"
                )
            await asyncio.sleep(0.05)

    async def _transfer_away_from(self, address: str) -> None:
        if self.node.address != address:
            raise NotLeader("the leader itself must hand over leadership", self.member_id_of(address))
        await self.transfer_leadership(cluster_pb2.TransferLeadershipRequest())
        deadline = time.monotonic() + self.committer.options.timeout
        while self.node.leader_address in (None, address):
            if time.monotonic() > deadline:
                raise OutcomeUnknown("no new leader after handing over leadership")
            await asyncio.sleep(0.02)

    async def transfer_leadership(
        self, req: cluster_pb2.TransferLeadershipRequest
    ) -> cluster_pb2.TransferLeadershipResponse:
        target = None
        if req.target_id:
            member = self._member(req.target_id)
            if member is None:
                raise CommandFailed(ErrorCode.MEMBER_NOT_FOUND, f"member {req.target_id!r} not found")
            target = member.raft_address
        if not self.node.is_leader:
            raise NotLeader("leadership is transferred by the leader", self.member_id_of(self.node.leader_address))
        if target == self.node.address:
            return cluster_pb2.TransferLeadershipResponse(header=self.header(), leader_id=self.options.member_id)
        timeout = req.timeout_seconds or 5.0
        deadline = time.monotonic() + timeout
        # As Raft prescribes, no new proposals while leadership moves, ours or
        # forwarded: the target must hold the whole log before it is asked
        # to take over, and still hold it when the others vote.
        self.committer.pause()
        self.node.refuse_forwarded_commands(True)
        try:
            return await self._transfer(target, timeout, deadline)
        finally:
            self.node.refuse_forwarded_commands(False)
            self.committer.resume()

    async def _transfer(
        self, target: str | None, timeout: float, deadline: float
    ) -> cluster_pb2.TransferLeadershipResponse:
        while True:
            # Refused while the target is not fully caught up: retry until it is.
            error = await self._transfer_once(target)
            if error is None:
                # The target stands for election at once; give it a round.
                attempt_ends = min(deadline, time.monotonic() + 1.0)
                while time.monotonic() < attempt_ends:
                    leader = self.node.leader_address
                    if leader is not None and leader != self.node.address and (target is None or leader == target):
                        return cluster_pb2.TransferLeadershipResponse(
                            header=self.header(), leader_id=self.member_id_of(leader)
                        )
                    await asyncio.sleep(0.01)
            if time.monotonic() > deadline:
                raise OutcomeUnknown(f"leadership did not move within {timeout:g}s")
            if not self.node.is_leader:
                raise NotLeader("lost leadership during the transfer", self.member_id_of(self.node.leader_address))
            await asyncio.sleep(0.02)

    async def _transfer_once(self, target: str | None) -> ProposalError | None:
        started: asyncio.Future[ProposalError | None] = self.loop.create_future()

        def callback(error: ProposalError | None) -> None:
            if not started.done():
                started.set_result(error)

        self.node.transfer_leadership(target, callback)
        return await started

    async def hash_kv(self) -> cluster_pb2.HashKVResponse:
        digest, revision = self.sm.state_hash()
        header = self.header()
        header.revision = revision
        return cluster_pb2.HashKVResponse(
            header=header,
            hash=digest,
            applied_index=self.node.applied_index,
            compact_revision=self.sm.compact_revision,
        )

    def gauges(self) -> dict[str, tuple[str, float]]:
        node = self.node
        return {
            "raftkube_raft_term": ("The Raft term this master is in.", node.term),
            "raftkube_raft_is_leader": ("1 if this master is the Raft leader.", float(node.is_leader)),
            "raftkube_raft_leader_changes_seen_total": (
                "Leader changes this master saw (etcd_server_leader_changes_seen_total).",
                node.leader_changes,
            ),
            "raftkube_raft_has_leader": ("1 if a leader is known and reachable.", float(node.can_propose())),
            "raftkube_raft_commit_index": ("The highest log index known committed.", node.commit_index),
            "raftkube_raft_applied_index": ("The highest log index applied here.", node.applied_index),
            "raftkube_store_revision": ("The store revision applied here.", self.sm.revision),
            "raftkube_store_compact_revision": ("History before this revision is gone.", self.sm.compact_revision),
            "raftkube_store_keys": ("Keys with retained history.", self.sm.keys_count()),
            "raftkube_store_leases": ("Live TTL leases.", self.sm.lease_count()),
            "raftkube_store_watchers": ("Open watches on this master.", self.watchers),
        }


def _check_address(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandFailed(ErrorCode.INVALID_ARGUMENT, f"{address!r} is not host:port")
