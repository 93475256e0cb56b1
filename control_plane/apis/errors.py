"""API errors as Kubernetes answers them: an HTTP code, a reason, and a
metav1.Status body with details and field causes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Cause:
    field: str
    message: str
    reason: str = "FieldValueInvalid"


@dataclass
class ApiError(Exception):
    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    causes: list[Cause] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        details = dict(self.details)
        if self.causes:
            details["causes"] = [{"reason": c.reason, "message": c.message, "field": c.field} for c in self.causes]
        if details:
            body["details"] = details
        return body


def _what(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{_what(group, plural)} "{name}" not found',
        {"name": name, "group": group, "kind": plural},
    )


def already_exists(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{_what(group, plural)} "{name}" already exists',
        {"name": name, "group": group, "kind": plural},
    )


def conflict(group: str, plural: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_what(group, plural)} "{name}": {why}',
        {"name": name, "group": group, "kind": plural},
    )


def modified(group: str, plural: str, name: str) -> ApiError:
    """The 409 of a write computed from a version that is no longer current."""
    return conflict(
        group,
        plural,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )


def invalid(kind: str, name: str, causes: list[Cause], group: str = "") -> ApiError:
    text = ", ".join(f"{c.field}: {c.message}" for c in causes)
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {text}' if name else f"{kind} is invalid: {text}",
        {"name": name, "group": group, "kind": kind},
        causes,
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


ACCEPTED_MEDIA_TYPES = (
    "application/json, application/yaml, application/vnd.kubernetes.protobuf, application/merge-patch+json, "
    "application/json-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"
)


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f'{ACCEPTED_MEDIA_TYPES} ("{content_type}")',
    )


def timeout(message: str) -> ApiError:
    return ApiError(504, "Timeout", message)


def unavailable(message: str, retry_after: int = 0) -> ApiError:
    """A 503; with `retry_after`, clients (client-go, kubectl) retry by
    themselves after that many seconds."""
    return ApiError(503, "ServiceUnavailable", message, {"retryAfterSeconds": retry_after} if retry_after else {})


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", message)
