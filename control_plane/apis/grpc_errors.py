"""One mapping between API errors and gRPC status, for the resource
servicer and the clients: the gRPC code follows the HTTP code, and the
whole metav1.Status travels as JSON in the trailing metadata, so a gRPC
client sees exactly the error a REST client would."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from control_plane.apis import codec
from control_plane.apis.errors import ApiError, Cause

STATUS_TRAILER = "k8s-status-bin"

_BY_HTTP: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.ABORTED,
    410: grpc.StatusCode.OUT_OF_RANGE,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_code(error: ApiError) -> grpc.StatusCode:
    if error.reason == "AlreadyExists":
        return grpc.StatusCode.ALREADY_EXISTS
    return _BY_HTTP.get(error.code, grpc.StatusCode.UNKNOWN)


def trailer(error: ApiError) -> tuple[tuple[str, bytes]]:
    return ((STATUS_TRAILER, codec.dumps(error.status())),)


def from_status(status: dict[str, Any]) -> ApiError:
    details = dict(status.get("details") or {})
    causes = [
        Cause(str(c.get("field", "")), str(c.get("message", "")), str(c.get("reason", "")))
        for c in details.pop("causes", None) or []
    ]
    return ApiError(
        int(status.get("code") or 500),
        str(status.get("reason") or "InternalError"),
        str(status.get("message") or ""),
        details,
        causes,
    )


def from_rpc_error(error: grpc.RpcError) -> ApiError | None:
    """The ApiError a failed call carries; None when the failure is the
    transport's (the master is down, unreachable, or not serving)."""
    trailing = getattr(error, "trailing_metadata", None)  # sync and aio errors both have it
    metadata: Iterable[tuple[str, Any]] = (trailing() if trailing else None) or ()
    for key, value in metadata:
        if key == STATUS_TRAILER:
            return from_status(codec.loads(value))
    return None
