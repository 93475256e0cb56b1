"""The store's errors, as the rest of raftkube sees them.

Three kinds, because a client must act differently on each:
- CommandFailed: the store refused the request; nothing was stored, and
  sending it again gets the same answer.
- NotCommitted: the request never entered the log (no leader, queue full,
  entry discarded by a new leader); retrying is safe.
- OutcomeUnknown: the request may have been applied, or may still be (the
  leader changed or it timed out in flight); read before retrying a write
  that is not idempotent.
"""

from __future__ import annotations

from ha.storepb import internal_pb2

ErrorCode = internal_pb2.CommandError.Code


class StoreError(Exception):
    pass


class CommandFailed(StoreError):
    """A request the store refuses; it becomes a CommandError result."""

    def __init__(self, code: int, message: str, compact_revision: int = 0, current_revision: int = 0):
        super().__init__(message)
        self.code = code
        self.message = message
        self.compact_revision = compact_revision
        self.current_revision = current_revision

    def to_error(self) -> internal_pb2.CommandError:
        return internal_pb2.CommandError(
            code=self.code,  # type: ignore[arg-type]
            message=self.message,
            compact_revision=self.compact_revision,
            current_revision=self.current_revision,
        )

    @classmethod
    def from_error(cls, error: internal_pb2.CommandError) -> CommandFailed:
        return cls(error.code, error.message, error.compact_revision, error.current_revision)


class NotCommitted(StoreError):
    pass


class OutcomeUnknown(StoreError):
    pass


class NotLeader(StoreError):
    """The operation must run on the leader; `leader_id` says who that is."""

    def __init__(self, message: str, leader_id: str | None):
        super().__init__(message)
        self.leader_id = leader_id
