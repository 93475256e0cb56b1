"""One mapping from store errors to gRPC status codes, for every servicer.

Clients rely on it: UNAVAILABLE means the request was not committed (retry,
on any master); DEADLINE_EXCEEDED means the outcome is unknown; OUT_OF_RANGE
carries "compact_revision=N" so a watcher can relist from there.
"""

from __future__ import annotations

import grpc

from ha.errors import CommandFailed, ErrorCode, NotCommitted, NotLeader, OutcomeUnknown, StoreError

_CODES: dict[int, grpc.StatusCode] = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.KEY_TOO_LARGE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.VALUE_TOO_LARGE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.TOO_MANY_OPS: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.DUPLICATE_KEY: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.LEASE_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.MEMBER_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.LEASE_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.COMPACTED: grpc.StatusCode.OUT_OF_RANGE,
    ErrorCode.FUTURE_REVISION: grpc.StatusCode.OUT_OF_RANGE,
    ErrorCode.UNKNOWN_OPERATION: grpc.StatusCode.UNIMPLEMENTED,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}


def status_of(error: StoreError) -> tuple[grpc.StatusCode, str]:
    if isinstance(error, CommandFailed):
        message = error.message
        if error.code == ErrorCode.COMPACTED and "compact_revision=" not in message:
            message = f"{message} (compact_revision={error.compact_revision})"
        return _CODES.get(error.code, grpc.StatusCode.UNKNOWN), message
    if isinstance(error, NotCommitted):
        return grpc.StatusCode.UNAVAILABLE, str(error)
    if isinstance(error, OutcomeUnknown):
        return grpc.StatusCode.DEADLINE_EXCEEDED, f"outcome unknown: {error}"
    if isinstance(error, NotLeader):
        return grpc.StatusCode.FAILED_PRECONDITION, f"{error} (leader: {error.leader_id or 'unknown'})"
    return grpc.StatusCode.UNKNOWN, str(error)


async def abort_with(context: grpc.aio.ServicerContext, error: StoreError) -> None:
    code, message = status_of(error)
    await context.abort(code, message)
