"""One master's Raft member: pysyncobj 0.3.17, corrected, driving the store's
state machine. The only module of raftkube that imports pysyncobj; its
camelCase, name-mangled habits stay in here.

What this module adds to pysyncobj:
- One replicated method, `apply_commands(list[bytes]) -> list[bytes]`, that
  hands each command to StateMachine.apply. pysyncobj numbers replicated
  methods by sorted name, so there is exactly one and it is never renamed.
- It runs on the master's asyncio loop, not on a thread of its own
  (pysyncobj's autoTick is off): the loop watches the Raft sockets through
  a poller of pysyncobj's interface and ticks after network events, after
  proposals and on a short timer. One Python thread does all the work, so
  the Raft work and the gRPC server never wait on each other for the GIL
  (measured: a thread holding the GIL 30% of the time halves grpc.aio's
  throughput). Tests tick nodes by hand instead (`manual_tick`).
- A snapshot file of its own (`SnapshotFile`): the state machine's snapshot
  is captured in the tick thread and written in the background, with a
  header that says which log entry it covers.
- Corrections of defects of 0.3.17 measured under faults (see
  ../shared/notes/pysyncobj.md); each can be switched off, for the tests
  that show it is needed:
  1. COMMIT_ON_UNVERIFIED_LOG: an append_entries without prevLogIdx (a
     snapshot chunk, or "still serializing") is no consistency check; it
     must not raise the commit index over the follower's own, possibly
     stale, log.
  2. STALE_SUCCESS_NEXT_INDEX: a late success reply never moves a
     follower's nextIndex backwards.
  3. CONFLICT_TRUNCATION: on a prevLogTerm mismatch the follower drops the
     conflicting entry and all after it at once (when not committed or
     applied), instead of answering with a reset that later pipelined
     replies overwrite forever.
  4. STALE_SNAPSHOT_INSTALL: a snapshot whose last index is not beyond the
     follower's applied index is refused.
  5. COMPACTION_INSTALL_RACE: a compaction that began before a snapshot was
     installed is abandoned: its file never replaces the installed one and
     the log is never cut by it (and never cut past its end).
  6. CHUNKED_SEND: entries of 64 KiB and more are sent in chunks whose
     'finish' marker pysyncobj computes from the raw, not the pickled,
     length; the follower keeps collecting until the data is whole.
  7. PARTIAL_SEND: a message the socket takes only in part is finished as
     soon as the socket is writable; pysyncobj left the rest until the
     next message to that peer (a heartbeat later, 50 ms, for every append
     larger than the socket buffer).
- Cheaper peer traffic: pickles with protocol 5 instead of 2 (which pickled
  bytes 1.5x larger at 5x the CPU), and frames sealed with AES-GCM instead of
  Fernet and not compressed (ha.peer_frames), which stock pysyncobj cannot
  read.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import itertools
import logging
import os
import pickle
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pysyncobj.pickle as pso_pickle
import pysyncobj.syncobj as pso_syncobj
import pysyncobj.tcp_connection as pso_tcp_connection
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.config import FAIL_REASON, SERIALIZER_STATE
from pysyncobj.node import TCPNode
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.syncobj import _RAFT_STATE
from pysyncobj.transport import TCPTransport
from pysyncobj.version import VERSION as PYSYNCOBJ_VERSION

from ha.peer_frames import FrameCipher, Uncompressed
from ha.snapshot_image import SnapshotImage
from ha.state_machine import StateMachine

log = logging.getLogger(__name__)

# The corrections below are written against this exact release.
SUPPORTED_PYSYNCOBJ = "0.3.17"
if PYSYNCOBJ_VERSION != SUPPORTED_PYSYNCOBJ:
    raise ImportError(
        f"ha.raft_node corrects pysyncobj {SUPPORTED_PYSYNCOBJ}, found {PYSYNCOBJ_VERSION}: "
        "re-check every correction against the new release before changing the pin"
    )

# pysyncobj pickles every peer message and log entry with its module-level
# protocol (2). Protocol 5 writes bytes as they are.
setattr(pso_pickle, "__protocol", pickle.HIGHEST_PROTOCOL if pickle.HIGHEST_PROTOCOL >= 5 else 4)


# Frames sealed with AES-GCM and not compressed (ha.peer_frames says why).
pso_tcp_connection.zlib = Uncompressed
pso_syncobj.getEncryptor = FrameCipher.from_secret


class Correction(enum.Enum):
    COMMIT_ON_UNVERIFIED_LOG = 1
    STALE_SUCCESS_NEXT_INDEX = 2
    CONFLICT_TRUNCATION = 3
    STALE_SNAPSHOT_INSTALL = 4
    COMPACTION_INSTALL_RACE = 5
    CHUNKED_SEND = 6
    PARTIAL_SEND = 7


ALL_CORRECTIONS = frozenset(Correction)


class ProposalError(Exception):
    """A batch of commands was not applied, or may not have been."""

    def __init__(self, reason: int, message: str):
        super().__init__(message)
        self.reason = reason

    @property
    def outcome_unknown(self) -> bool:
        """True when the commands may still have been (or be) applied."""
        return self.reason in (FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME)

    @property
    def never_appended(self) -> bool:
        """True when no Raft log holds the commands: pysyncobj answers these
        two before appending, so proposing them again cannot apply them twice."""
        return self.reason in (FAIL_REASON.NOT_LEADER, FAIL_REASON.MISSING_LEADER)


_FAIL_TEXT = {
    FAIL_REASON.QUEUE_FULL: "the Raft command queue is full",
    FAIL_REASON.MISSING_LEADER: "no leader is known",
    FAIL_REASON.DISCARDED: "discarded: a new leader replaced the entry",
    FAIL_REASON.NOT_LEADER: "the master it was forwarded to is not the leader, or is handing leadership over",
    FAIL_REASON.LEADER_CHANGED: "the leader changed before the outcome was known",
    FAIL_REASON.REQUEST_DENIED: "request denied",
    FAIL_REASON.UNKNOWN_OUTCOME: "the outcome is unknown",
}


def proposal_error(reason: int) -> ProposalError:
    return ProposalError(reason, _FAIL_TEXT.get(reason, f"failed ({reason})"))


@dataclass
class RaftConfig:
    """How one member runs. Durations are in seconds."""

    self_address: str
    peer_addresses: list[str]
    password: str
    data_dir: str
    election_timeout_min: float = 0.35
    election_timeout_max: float = 0.7
    heartbeat_interval: float = 0.05
    # A leader that heard from no majority for this long steps down.
    leader_fallback_timeout: float = 1.0
    connection_timeout: float = 3.5
    connection_retry: float = 0.3
    log_compaction_min_entries: int = 5000
    log_compaction_min_time: float = 300.0
    # Every member reaches a fixed compaction threshold at about the same log
    # index, and a snapshot slows its member for seconds (capture, encoding
    # against the loop for the GIL, writing): members compacting together
    # stalled commits (measured: 600 puts/s for 3-5 s instead of 2,500). So
    # the k-th of n members (by address) makes its first compaction after
    # log_compaction_min_entries * (1 + k/n) entries and every later one
    # after log_compaction_min_entries: 1/n of the interval apart, one
    # member pauses at a time, and a follower's pause costs no commit while
    # the other follower answers. Tests of exact scenarios switch it off.
    log_compaction_stagger: bool = True
    snapshot_chunk_bytes: int = 1 << 20
    # Above the largest command the proposer sends, so pysyncobj's chunked
    # path (correction 6) is only a fallback.
    append_entries_max_bytes: int = 4 << 20
    # SO_SNDBUF and SO_RCVBUF of the Raft sockets, and what one recv()
    # reads. pysyncobj's 64 KiB (which also turns off the kernel's
    # autotuning) split a batch of 64 pod creates (160 KB) into several
    # writes, each waiting for the follower to read: at 1 MiB, a batch of
    # group commit's largest size goes out in one, and REST creates at c=64
    # went from ~1,600 to ~1,900/s. The kernel caps it at net.core.wmem_max
    # and rmem_max.
    socket_buffer_bytes: int = 1 << 20
    # How often the loop ticks when nothing else happens (timers: elections,
    # heartbeats); network events and proposals tick at once.
    tick_interval: float = 0.01
    corrections: frozenset[Correction] = ALL_CORRECTIONS
    # A master being added to a running cluster: it never stands for
    # election before it has heard from a leader. (pysyncobj has no
    # pre-vote; a joiner's elections would raise the term and depose the
    # leader as soon as it connects.)
    join: bool = False
    # Tests run members by hand (no thread); see RaftNode.tick.
    manual_tick: bool = False
    transport_class: type = TCPTransport
    extra: dict[str, Any] = field(default_factory=dict)

    def syncobj_conf(self) -> SyncObjConf:
        return SyncObjConf(
            password=self.password,
            autoTick=False,
            appendEntriesUseBatch=False,
            appendEntriesBatchSizeBytes=self.append_entries_max_bytes,
            raftMinTimeout=self.election_timeout_min,
            raftMaxTimeout=self.election_timeout_max,
            appendEntriesPeriod=self.heartbeat_interval,
            leaderFallbackTimeout=self.leader_fallback_timeout,
            connectionTimeout=self.connection_timeout,
            connectionRetryTime=self.connection_retry,
            journalFile=os.path.join(self.data_dir, "raft.journal"),
            fullDumpFile=os.path.join(self.data_dir, "raft.snapshot"),
            logCompactionMinEntries=self.log_compaction_min_entries,
            logCompactionMinTime=self.log_compaction_min_time,
            logCompactionBatchSize=self.snapshot_chunk_bytes,
            dynamicMembershipChange=True,
            commandsWaitLeader=True,
            bindAddress=self.self_address,
            bindRetryTime=0.2,
            maxBindRetries=5,
            sendBufferSize=self.socket_buffer_bytes,
            recvBufferSize=self.socket_buffer_bytes,
            **self.extra,
        )


# -- snapshot file -----------------------------------------------------------

_MAGIC = b"RKSNAP1\n"
_HEADER = struct.Struct(">II")  # header length, reserved


class SnapshotFile:
    """pysyncobj's Serializer interface over raftkube's snapshot file.

    File: magic, header length, a pickled header (last entry, the entry
    before it, cluster addresses), the state machine's snapshot, and a
    SHA-256 of everything before it. The header is read without the state,
    to refuse a stale snapshot before installing it (correction 4).
    """

    def __init__(
        self,
        path: str,
        state_machine: StateMachine,
        chunk_bytes: int,
        applied_index: Callable[[], int],
        corrections: frozenset[Correction],
        on_compaction: Callable[[], None] | None = None,
    ):
        self._path = path
        self._on_compaction = on_compaction
        self._sm = state_machine
        self._chunk = chunk_bytes
        self._applied_index = applied_index
        self._corrections = corrections
        self._lock = threading.Lock()
        # Bumped by every install; a compaction of an older generation is void.
        self._generation = 0
        self._job: _CompactionJob | None = None
        self._transmissions: dict[Any, Any] = {}
        self._incoming: Any = None
        self._incoming_path = path + ".incoming"
        self.installs_refused = 0

    # Compaction (leader and followers alike).

    def serialize(self, data: tuple[Any, Any, Any, Any], entry_id: int) -> None:
        if self._job is not None:
            return
        if self._on_compaction is not None:
            self._on_compaction()
        _, last_entry, prev_entry, cluster = data
        addresses = sorted(node.id for node in cluster)
        header = pickle.dumps((last_entry, prev_entry, addresses), protocol=5)
        image = self._sm.capture()  # here, at exactly last_entry; encoded by the writer
        job = _CompactionJob(entry_id, self._generation)
        self._job = job
        thread = threading.Thread(
            target=self._write, args=(job, header, image), name="raft-snapshot-writer", daemon=True
        )
        thread.start()

    def _write(self, job: _CompactionJob, header: bytes, image: SnapshotImage) -> None:
        tmp = f"{self._path}.compaction.{os.getpid()}.tmp"
        try:
            _write_snapshot(tmp, header, _yielding(image.encode_chunks()))
            with self._lock:
                void = Correction.COMPACTION_INSTALL_RACE in self._corrections and job.generation != self._generation
                if void:
                    os.unlink(tmp)
                else:
                    os.replace(tmp, self._path)
            job.result = SERIALIZER_STATE.FAILED if void else SERIALIZER_STATE.SUCCESS
        except Exception:
            log.exception("writing the snapshot file failed")
            job.result = SERIALIZER_STATE.FAILED

    def checkSerializing(self) -> tuple[int, int | None]:
        job = self._job
        if job is None:
            return SERIALIZER_STATE.NOT_SERIALIZING, None
        if job.result is None:
            return SERIALIZER_STATE.SERIALIZING, job.entry_id
        self._job = None
        if job.result == SERIALIZER_STATE.SUCCESS:
            self._drop_transmissions()
        return job.result, job.entry_id

    def deserialize(self) -> tuple[None, Any, Any, list[TCPNode]]:
        """Restore the state machine from the file; pysyncobj gets the log
        position it covers (the state itself it must not touch: None) and
        the members, as nodes: it drops itself from that list by comparing
        nodes, and a plain address would never equal its own node."""
        header, state = _read_snapshot(self._path)
        last_entry, prev_entry, addresses = header
        self._sm.restore(state)
        return None, last_entry, prev_entry, [TCPNode(a) for a in addresses]

    # Sending to a follower that is too far behind (leader).

    def getTransmissionData(self, node: Any) -> Any:
        if self._job is not None:
            return None  # still serializing: the file is about to change
        t = self._transmissions.get(node)
        if t is None:
            try:
                t = self._transmissions[node] = [open(self._path, "rb"), True]  # noqa: SIM115 - kept open across chunks
            except OSError:
                log.warning("no snapshot file to send to %s", node)
                return None
        f, first = t
        data = f.read(self._chunk)
        t[1] = False
        last = not data
        if last:
            f.close()
            del self._transmissions[node]
        return data, first, last

    def cancelTransmisstion(self, node: Any) -> None:
        t = self._transmissions.pop(node, None)
        if t is not None:
            t[0].close()

    def _drop_transmissions(self) -> None:
        for f, _ in self._transmissions.values():
            f.close()
        self._transmissions.clear()

    # Receiving one (follower).

    def setTransmissionData(self, data: Any) -> bool:
        """Take a chunk; True once a whole snapshot is in place to load."""
        if data is None:
            return False
        chunk, first, last = data
        if first:
            if self._incoming is not None:
                self._incoming.close()
            self._incoming = open(self._incoming_path, "wb")  # noqa: SIM115 - kept open across chunks
        elif self._incoming is None:
            return False
        self._incoming.write(chunk)
        if not last:
            return False
        f, self._incoming = self._incoming, None
        f.flush()
        os.fsync(f.fileno())
        f.close()
        try:
            header, _ = _read_snapshot(self._incoming_path, header_only=True)
        except (OSError, ValueError) as e:
            log.error("received a damaged snapshot: %s", e)
            return False
        snapshot_index = header[0][1]
        applied = self._applied_index()
        if Correction.STALE_SNAPSHOT_INSTALL in self._corrections and snapshot_index <= applied:
            log.warning("refused a snapshot at index %d: already applied up to %d", snapshot_index, applied)
            self.installs_refused += 1
            os.unlink(self._incoming_path)
            return False
        with self._lock:
            self._generation += 1
            os.replace(self._incoming_path, self._path)
        _fsync_dir(self._path)
        log.info("installing a snapshot from the leader at index %d (applied here: %d)", snapshot_index, applied)
        return True


@dataclass
class _CompactionJob:
    entry_id: int
    generation: int
    result: int | None = None


# Between two pieces of a snapshot it encodes, the writer thread sleeps this
# long: encoding is Python holding the GIL for seconds, and without a pause
# the loop would get it only every switch interval (5 ms) (measured: a
# leader fell from ~2,500 to ~900 puts/s while it encoded and wrote 122 MB).
SNAPSHOT_WRITER_PAUSE = 0.002


def _yielding(chunks: Iterator[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        yield chunk
        time.sleep(SNAPSHOT_WRITER_PAUSE)


def _write_snapshot(path: str, header: bytes, state: bytes | Iterable[bytes]) -> None:
    """The file: magic, header, the state (whole, or as pieces written one
    after the other), SHA-256 of all before it; fsynced."""
    digest = hashlib.sha256()
    pieces = [state] if isinstance(state, bytes) else state
    with open(path, "wb") as f:
        for part in itertools.chain((_MAGIC, _HEADER.pack(len(header), 0), header), pieces):
            digest.update(part)
            f.write(part)
        f.write(digest.digest())
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(path)


def _read_snapshot(path: str, header_only: bool = False) -> tuple[Any, bytes]:
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + _HEADER.size + 32:
        raise ValueError(f"{path} is not a raftkube snapshot")
    body, digest = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise ValueError(f"{path}: checksum mismatch")
    offset = len(_MAGIC)
    (header_len, _) = _HEADER.unpack_from(body, offset)
    offset += _HEADER.size
    header = pickle.loads(body[offset : offset + header_len])
    if header_only:
        return header, b""
    return header, body[offset + header_len :]


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the node ------------------------------------------------------------------

ROLE_NAMES = {
    _RAFT_STATE.FOLLOWER: "follower",
    _RAFT_STATE.CANDIDATE: "candidate",
    _RAFT_STATE.LEADER: "leader",
}

ApplyCallback = Callable[[list[bytes] | None, ProposalError | None], None]


class _LoopPoller:
    """pysyncobj's poller interface on an asyncio loop: the loop watches the
    Raft sockets, runs pysyncobj's handler for each event, and then asks for
    a tick. `poll` does nothing: the loop does the waiting."""

    def __init__(self, loop: asyncio.AbstractEventLoop, after_event: Callable[[], None]):
        self._loop = loop
        self._after_event = after_event
        self._masks: dict[int, int] = {}
        self.errors = 0

    def subscribe(self, fd: int, callback: Callable[[int, int], None], mask: int) -> None:
        old = self._masks.get(fd, 0)
        self._masks[fd] = mask
        if mask & POLL_EVENT_TYPE.READ:
            self._loop.add_reader(fd, self._fire, fd, callback, POLL_EVENT_TYPE.READ)
        elif old & POLL_EVENT_TYPE.READ:
            self._loop.remove_reader(fd)
        if mask & POLL_EVENT_TYPE.WRITE:
            self._loop.add_writer(fd, self._fire, fd, callback, POLL_EVENT_TYPE.WRITE)
        elif old & POLL_EVENT_TYPE.WRITE:
            self._loop.remove_writer(fd)

    def unsubscribe(self, fd: int) -> None:
        # pysyncobj closes a socket before unsubscribing it: the selector may
        # already have dropped the descriptor.
        mask = self._masks.pop(fd, 0)
        with contextlib.suppress(OSError, ValueError):
            if mask & POLL_EVENT_TYPE.READ:
                self._loop.remove_reader(fd)
        with contextlib.suppress(OSError, ValueError):
            if mask & POLL_EVENT_TYPE.WRITE:
                self._loop.remove_writer(fd)

    def unsubscribe_all(self) -> None:
        for fd in list(self._masks):
            self.unsubscribe(fd)

    def poll(self, timeout: float) -> None:
        return None

    def _fire(self, fd: int, callback: Callable[[int, int], None], event: int) -> None:
        try:
            callback(fd, event)
        except Exception:
            # pysyncobj raises from message handlers (bad frames, truncated
            # pickles): the loop must go on.
            self.errors += 1
            log.exception("Raft I/O handler failed")
        self._after_event()


_stock_create_poller = pso_syncobj.createPoller


def _create_poller(poller_type: Any) -> Any:
    if isinstance(poller_type, _LoopPoller):
        return poller_type
    return _stock_create_poller(poller_type)


pso_syncobj.createPoller = _create_poller

_stock_disconnect = pso_tcp_connection.TcpConnection.disconnect


def _disconnect(self: Any) -> None:
    # pysyncobj closes the socket and then unsubscribes it; on an event loop
    # the descriptor must leave the loop first, or a watcher can outlive it
    # and swallow the events of the next socket given the same number.
    fileno = self._TcpConnection__fileno
    if fileno is not None:
        self._TcpConnection__poller.unsubscribe(fileno)
    _stock_disconnect(self)


pso_tcp_connection.TcpConnection.disconnect = _disconnect

# Frame sizes a peer may announce. pysyncobj reads whatever a socket holds
# into one buffer before it looks at a frame's length, so a peer announcing
# 2 GiB and streaming gets 2 GiB of this master's memory. Until a peer's
# first frame has decrypted (the cluster secret proves it is a master; that
# frame is a 32-byte key), only a small frame is allowed; after it, any a
# master sends (an append is bounded by append_entries_max_bytes plus one
# entry, far below the limit).
UNTRUSTED_FRAME_BYTES = 64 << 10
MAX_FRAME_BYTES = 64 << 20
_stock_process_read = pso_tcp_connection.TcpConnection._TcpConnection__processRead
_stock_parse_message = pso_tcp_connection.TcpConnection._TcpConnection__processParseMessage
frames_refused = 0


def _process_read(self: Any) -> bool:
    global frames_refused
    more = bool(_stock_process_read(self))
    buffer = self._TcpConnection__readBuffer
    if len(buffer) >= 4:
        (length,) = struct.unpack("i", buffer[:4])
        trusted = getattr(self, "_raftkube_trusted", False)
        limit = MAX_FRAME_BYTES if trusted else UNTRUSTED_FRAME_BYTES
        # Before it authenticates, a peer has nothing to send but that frame.
        if length < 0 or length > limit or (not trusted and len(buffer) > 4 + limit):
            frames_refused += 1
            log.warning(
                "a Raft peer (fd %s) announced a %d-byte frame, over the limit of %d %s: disconnected",
                self._TcpConnection__fileno,
                length,
                limit,
                "for masters" if trusted else "before authenticating",
            )
            self.disconnect()
            return False
    return more


def _parse_message(self: Any) -> Any:
    message = _stock_parse_message(self)
    if message is not None:
        self._raftkube_trusted = True  # it decrypted: the peer holds the secret
    return message


pso_tcp_connection.TcpConnection._TcpConnection__processRead = _process_read
pso_tcp_connection.TcpConnection._TcpConnection__processParseMessage = _parse_message

_stock_send = pso_tcp_connection.TcpConnection.send


def _send(self: Any, message: Any) -> None:
    # Correction PARTIAL_SEND. pysyncobj writes what the socket takes and
    # keeps the rest, but asks to hear of writability only on a connection's
    # first event: the rest waited for the next message to this peer (a
    # heartbeat, 50 ms). Only RaftNodes' pollers opt in, so bare pysyncobj
    # (the store bench's baseline) keeps its behaviour.
    _stock_send(self, message)
    poller = self._TcpConnection__poller
    if (
        self._TcpConnection__writeBuffer
        and getattr(poller, "raftkube_complete_sends", False)
        and self._TcpConnection__state == pso_tcp_connection.CONNECTION_STATE.CONNECTED
    ):
        poller.subscribe(
            self._TcpConnection__fileno,
            self._TcpConnection__processConnection,
            POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR,
        )


pso_tcp_connection.TcpConnection.send = _send


class RaftNode(SyncObj):
    """One Raft member. Not thread-safe: every method runs on the thread of
    its event loop, or, with `manual_tick`, on the thread that ticks it.
    Plain attribute reads (role, indexes, term) are safe from anywhere."""

    # pysyncobj's own state that the corrections write (name-mangled).
    _SyncObj__raftCommitIndex: int

    def __init__(
        self,
        config: RaftConfig,
        state_machine: StateMachine,
        loop: asyncio.AbstractEventLoop | None = None,
        on_applied: Callable[[int], None] | None = None,
        on_role_change: Callable[[str], None] | None = None,
        on_batch_applied: Callable[[int, float], None] | None = None,
    ):
        if not config.password:
            raise ValueError("a cluster secret is required: peers exchange pickles, which run code")
        if loop is None and not config.manual_tick:
            raise ValueError("a RaftNode runs on an event loop, or is ticked by hand (manual_tick)")
        os.makedirs(config.data_dir, exist_ok=True)
        self.config = config
        self.state_machine = state_machine
        self.corrections = config.corrections
        self._on_applied = on_applied
        self._on_role_change = on_role_change
        self._on_batch_applied = on_batch_applied
        self._loop = loop
        self._tick_pending = False
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False
        self._reported_applied = 0
        self._next_timeout_check = 0.0
        self._joining = config.join
        self._refusing_forwarded = False
        self._last_leader: Any = None
        # Leaders this member has seen take over (etcd_server_leader_changes_seen_total).
        self.leader_changes = 0
        self.tick_errors = 0
        conf = config.syncobj_conf()
        conf.onStateChanged = self._state_changed
        if loop is not None:
            conf.pollerType = _LoopPoller(loop, self._request_tick)
        peers = [a for a in config.peer_addresses if a != config.self_address]
        super().__init__(config.self_address, peers, conf, transportClass=config.transport_class)
        self._poller.raftkube_complete_sends = Correction.PARTIAL_SEND in config.corrections
        # Safe: with autoTick off nothing has ticked yet.
        self._SyncObj__serializer = SnapshotFile(
            conf.fullDumpFile,
            state_machine,
            config.snapshot_chunk_bytes,
            lambda: self._SyncObj__raftLastApplied,
            config.corrections,
            on_compaction=lambda: self._stagger_compaction(first=False),
        )
        self._stagger_compaction(first=True)
        if loop is not None:
            self._timer = loop.call_later(self.config.tick_interval, self._timed_tick)

    # -- the replicated method -------------------------------------------------

    @replicated
    def apply_commands(self, commands: list[bytes]) -> list[bytes]:
        # Never raises: StateMachine.apply does not, and a malformed entry
        # (not a list of bytes) is answered here.
        started = time.perf_counter()
        apply = self.state_machine.apply
        try:
            results = [apply(c) for c in commands]
        except TypeError:
            log.error("skipped a malformed log entry")
            results = []
        if self._on_batch_applied is not None:
            self._on_batch_applied(len(commands), time.perf_counter() - started)
        return results

    def submit(self, commands: list[bytes], callback: ApplyCallback) -> None:
        """Propose a batch; `callback(results, None)` or `(None, error)`
        runs (on this node's thread) once the batch is applied here, or failed."""

        def done(results: Any, err: int) -> None:
            if err == FAIL_REASON.SUCCESS:
                callback(results, None)
            else:
                callback(None, proposal_error(err))

        self.apply_commands(commands, callback=done)
        self._request_tick()

    # -- ticking -------------------------------------------------------------------

    def _stagger_compaction(self, first: bool) -> None:
        """When this member's next compaction is due (RaftConfig.log_compaction_stagger)."""
        if not self.config.log_compaction_stagger:
            return
        base = self.config.log_compaction_min_entries
        offset = 0
        if first:
            members = sorted({*self.config.peer_addresses, self.config.self_address})
            offset = base * members.index(self.config.self_address) // len(members)
        self._SyncObj__conf.logCompactionMinEntries = base + offset

    def tick(self, wait: float = 0.0) -> None:
        """One round of Raft work. By hand (manual_tick), it also waits up
        to `wait` for network events and handles them."""
        if self._joining:
            if self._SyncObj__raftLeader is None:
                self._SyncObj__raftElectionDeadline = time.monotonic() + self.config.election_timeout_max
            else:
                self._joining = False
        try:
            self.doTick(wait)
        except Exception:
            self.tick_errors += 1
            log.exception("Raft tick failed")
        leader = self._SyncObj__raftLeader
        if leader is not None and leader != self._last_leader:
            self._last_leader = leader
            self.leader_changes += 1
            # Worth a line in every master's log: a failover is the first
            # thing anyone looks for when a request failed.
            log.info("Raft leader is now %s (term %d)", leader.id, self.term)
        applied = self._SyncObj__raftLastApplied
        if applied != self._reported_applied:
            self._reported_applied = applied
            if self._on_applied is not None:
                self._on_applied(applied)

    def _request_tick(self) -> None:
        """Tick soon: after network events and proposals, once per loop pass."""
        if self._loop is None or self._tick_pending or self._stopped:
            return
        self._tick_pending = True
        self._loop.call_soon(self._pending_tick)

    def _pending_tick(self) -> None:
        self._tick_pending = False
        if not self._stopped:
            self.tick()

    def _timed_tick(self) -> None:
        # Elections and heartbeats are due by time, not by events.
        if self._stopped or self._loop is None:
            return
        self.tick()
        now = time.monotonic()
        if now >= self._next_timeout_check:
            self._next_timeout_check = now + 0.5
            self._expire_silent_connections()
        self._timer = self._loop.call_later(self.config.tick_interval, self._timed_tick)

    def _expire_silent_connections(self) -> None:
        """pysyncobj checks a connection's read timeout only when an event
        arrives on it, so a connection whose peer went silent mid-handshake
        would hang for good; check them all now and then."""
        transport = self._SyncObj__transport
        connections = list(getattr(transport, "_connections", {}).values())
        connections += list(getattr(transport, "_unknownConnections", ()))
        for conn in connections:
            try:
                conn._TcpConnection__processConnectionTimeout()
            except Exception:
                log.exception("checking a Raft connection failed")

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        self._doDestroy()
        if isinstance(self._poller, _LoopPoller):
            self._poller.unsubscribe_all()

    def _state_changed(self, old: int, new: int) -> None:
        if self._on_role_change is not None:
            self._on_role_change(ROLE_NAMES.get(new, "unknown"))

    # -- what the store reads ----------------------------------------------------------

    @property
    def address(self) -> str:
        return self.config.self_address

    @property
    def is_leader(self) -> bool:
        return self._SyncObj__raftState == _RAFT_STATE.LEADER

    @property
    def role(self) -> str:
        return ROLE_NAMES.get(self._SyncObj__raftState, "unknown")

    @property
    def term(self) -> int:
        return int(self._SyncObj__raftCurrentTerm)

    @property
    def commit_index(self) -> int:
        return int(self._SyncObj__raftCommitIndex)

    @property
    def applied_index(self) -> int:
        return int(self._SyncObj__raftLastApplied)

    @property
    def leader_address(self) -> str | None:
        leader = self._SyncObj__raftLeader
        return leader.id if leader is not None else None

    def can_propose(self) -> bool:
        """A leader is known and reachable: a proposal made now will not be
        forwarded into a connection that is already gone."""
        leader = self._SyncObj__raftLeader
        if leader is None:
            return False
        return bool(leader == self._SyncObj__selfNode or leader in self._SyncObj__connectedNodes)

    def raft_status(self) -> dict[str, Any]:
        self_node = self._SyncObj__selfNode
        others = self._SyncObj__otherNodes
        connected = self._SyncObj__connectedNodes
        leader = self.is_leader
        peers = [
            {
                "address": n.id,
                "connected": n in connected,
                "match_index": self._SyncObj__raftMatchIndex.get(n, 0) if leader else 0,
                "next_index": self._SyncObj__raftNextIndex.get(n, 0) if leader else 0,
            }
            for n in sorted(others, key=lambda n: n.id)
        ]
        return {
            "address": self_node.id,
            "role": self.role,
            "term": self.term,
            # Only a leader this master can reach: pysyncobj starts no
            # election while connected to no one, so an isolated follower
            # would otherwise report a dead leader forever (etcd reports
            # none: its isolated members become pre-candidates).
            "leader": self.leader_address if self.can_propose() else None,
            "commit_index": self.commit_index,
            "applied_index": self.applied_index,
            "has_quorum": self.hasQuorum,
            "quorum_size": (len(others) + 1) // 2 + 1,
            "peers": peers,
            "log_entries": len(self._SyncObj__raftLog),
            "ready": self.isReady(),
        }

    # -- membership and leadership -------------------------------------------------

    def add_member(self, address: str, callback: Callable[[ProposalError | None], None]) -> None:
        self.addNodeToCluster(address, callback=_membership_done(callback))
        self._request_tick()

    def remove_member(self, address: str, callback: Callable[[ProposalError | None], None]) -> None:
        self.removeNodeFromCluster(address, callback=_membership_done(callback))
        self._request_tick()

    def transfer_leadership(self, address: str | None, callback: Callable[[ProposalError | None], None]) -> None:
        """Ask the target (None: the most caught-up follower) to take over;
        refused while the target is not fully caught up."""
        self.transferLeadership(address, callback=_membership_done(callback))
        self._request_tick()

    def refuse_forwarded_commands(self, refuse: bool) -> None:
        """While leadership moves, append no command other members forward.

        Raft's transfer needs the target's log to equal the leader's when it
        stands for election; the leader's own proposals pause in its group
        committer, but followers forward theirs straight into pysyncobj. Had
        they been appended, voters holding them would refuse the target's
        vote request (measured: 250 entries per second-long attempt with
        writers on every master, elections lost until the 4th attempt), as
        etcd's leader drops proposals during a transfer for the same reason.
        Refused commands are answered 'not the leader' at once: never
        appended, so the forwarder proposes them again (to the new leader,
        once there is one; see GroupCommitter._requeue)."""
        self._refusing_forwarded = refuse

    def election_state(self) -> str:
        """What decides this member's elections, for diagnosis."""
        raft_log = self._SyncObj__raftLog
        return (
            f"log=[{raft_log[0][1]}..{raft_log[-1][1]}] last-term={raft_log[-1][2]} "
            f"commit={self.commit_index} applied={self.applied_index} "
            f"voted-for={self._SyncObj__votedForNodeId} "
            f"election-in={self._SyncObj__raftElectionDeadline - time.monotonic():.2f}s "
            f"transfer={self._SyncObj__transferInProgress} joining={self._joining} "
            f"others={sorted(n.id for n in self._SyncObj__otherNodes)}"
        )

    def transport_state(self) -> list[str]:
        """One line per Raft connection, for diagnosing a member that cannot
        reach its peers (logged on SIGUSR2 by the master)."""
        transport = self._SyncObj__transport
        connected = self._SyncObj__connectedNodes
        lines = []
        for node, conn in sorted(getattr(transport, "_connections", {}).items(), key=lambda kv: kv[0].id):
            lines.append(
                f"peer {node.id}: raft-connected={node in connected} tcp-state={conn.state} "
                f"fd={conn.fileno()} handshake={'done' if conn.sendRandKey else 'pending'} "
                f"idle={time.monotonic() - conn._TcpConnection__lastReadTime:.1f}s "
                f"unsent={conn.getSendBufferSize()} unread={len(conn._TcpConnection__readBuffer)}"
            )
        for conn in getattr(transport, "_unknownConnections", ()):
            lines.append(
                f"unidentified incoming: tcp-state={conn.state} fd={conn.fileno()} "
                f"handshake={'done' if conn.sendRandKey else 'pending'} "
                f"idle={time.monotonic() - conn._TcpConnection__lastReadTime:.1f}s "
                f"unread={len(conn._TcpConnection__readBuffer)}"
            )
        if isinstance(self._poller, _LoopPoller):
            lines.append(f"loop-watched fds: {sorted(self._poller._masks.items())}")
        return lines

    def member_addresses(self) -> list[str]:
        """Raft's own view of the voting members."""
        return sorted([self._SyncObj__selfNode.id] + [n.id for n in self._SyncObj__otherNodes])

    # -- messages ----------------------------------------------------------------

    def _SyncObj__applyLogEntries(self) -> bool:
        """Apply what is committed; whether to send every follower an
        append_entries now. With appendEntriesUseBatch off pysyncobj sends
        one after every apply, only to carry the new commit index, and then,
        in the same tick, another for each command it appends from its
        queue, which carries the commit index too. Under group commit the
        next batch is queued while the last one is applied (its completion
        sends it), so on a loaded leader every entry cost two messages to
        each follower and two answers. While commands are queued the first
        is left out; with none queued the commit index goes out at once."""
        send = SyncObj._SyncObj__applyLogEntries(self)
        if send and self.is_leader and self._SyncObj__commandsQueue._FastQueue__queue:
            return False
        return bool(send)

    # -- corrections -------------------------------------------------------------

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        original = SyncObj._SyncObj__onMessageReceived
        if kind == "append_entries" and message.get("term", -1) >= self._SyncObj__raftCurrentTerm:
            self._on_append_entries(node, message, original)
        elif kind == "next_node_idx" and self.is_leader:
            self._on_next_node_idx(node, message, original)
        elif kind == "apply_command" and self._refusing_forwarded:
            if "request_id" in message:
                self._SyncObj__callErrCallback(FAIL_REASON.NOT_LEADER, (node, message["request_id"]))
        else:
            original(self, node, message)

    def _on_append_entries(self, node: Any, message: dict[str, Any], original: Callable[..., None]) -> None:
        corrections = self.corrections
        verified = "prevLogIdx" in message
        if verified:
            if Correction.CONFLICT_TRUNCATION in corrections:
                self._drop_conflicting_entries(message)
            if Correction.CHUNKED_SEND in corrections and message.get("transmission") == "finish":
                self._hold_incomplete_finish(message)
        commit_before = self._SyncObj__raftCommitIndex
        applied_before = self._SyncObj__raftLastApplied
        original(self, node, message)
        if verified:
            return
        applied = self._SyncObj__raftLastApplied
        if Correction.COMMIT_ON_UNVERIFIED_LOG in corrections:
            # Nothing in this message vouched for our log: the commit index
            # may cover only what it covered before, or an installed snapshot.
            allowed = max(min(commit_before, self._SyncObj__getCurrentLogIndex()), applied)
            if self._SyncObj__raftCommitIndex > allowed:
                self._SyncObj__raftCommitIndex = allowed
                self._SyncObj__raftLog.setRaftCommitIndex(allowed)
        if applied > applied_before:
            self._fail_superseded_waiters(applied)

    def _drop_conflicting_entries(self, message: dict[str, Any]) -> None:
        prev_idx = message["prevLogIdx"]
        if prev_idx is None:
            return
        entries = self._SyncObj__getEntries(prev_idx)
        if not entries or entries[0][2] == message["prevLogTerm"]:
            return
        if prev_idx <= self._SyncObj__raftCommitIndex or prev_idx <= self._SyncObj__raftLastApplied:
            return  # never drop what is committed; pysyncobj answers a reset
        if self._SyncObj__conf.dynamicMembershipChange:
            for entry in reversed(entries):
                change = self._SyncObj__parseChangeClusterRequest(entry[0])
                if change is not None:
                    self._SyncObj__doChangeCluster(change, reverse=True)
        self._SyncObj__deleteEntriesFrom(prev_idx)

    def _hold_incomplete_finish(self, message: dict[str, Any]) -> None:
        received = self._SyncObj__recvTransmission or b""
        try:
            pso_pickle.loads(received + message["data"])
        except Exception:
            # Not whole yet: pysyncobj marked a middle chunk as the last one.
            message["transmission"] = "process"

    def _on_next_node_idx(self, node: Any, message: dict[str, Any], original: Callable[..., None]) -> None:
        before = self._SyncObj__raftNextIndex.get(node)
        original(self, node, message)
        if (
            Correction.STALE_SUCCESS_NEXT_INDEX in self.corrections
            and message.get("success")
            and not message.get("reset")
            and before is not None
            and self._SyncObj__raftNextIndex.get(node, before) < before
        ):
            self._SyncObj__raftNextIndex[node] = before

    def _fail_superseded_waiters(self, applied: int) -> None:
        """A snapshot replaced entries that local proposers wait on: pysyncobj
        would leave them waiting forever. Their outcome is unknown."""
        waiting = self._SyncObj__commandsWaitingCommit
        for idx in sorted(i for i in waiting if i <= applied):
            for _, callback in waiting.pop(idx):
                callback(None, FAIL_REASON.UNKNOWN_OUTCOME)

    def _SyncObj__deleteEntriesTo(self, to_idx: int) -> None:
        if Correction.COMPACTION_INSTALL_RACE in self.corrections and to_idx > self._SyncObj__getCurrentLogIndex():
            log.warning("refused to compact the log to %d, past its end", to_idx)
            return
        SyncObj._SyncObj__deleteEntriesTo(self, to_idx)


def _membership_done(callback: Callable[[Any], None]) -> Callable[[Any, int], None]:
    def done(_: Any, err: int) -> None:
        callback(None if err == FAIL_REASON.SUCCESS else proposal_error(err))

    return done
