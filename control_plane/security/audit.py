"""Audit: one JSON line per request and stage (audit.k8s.io/v1 Event), at
the level the audit policy gives the request, as kube-apiserver's log
backend writes them.

Levels: None (nothing), Metadata (who, what, when, the answer's code: no
bodies, so a secret's data never appears), Request (plus the request
body), RequestResponse (plus the response body). The policy is
audit.k8s.io/v1 Policy YAML: the first rule whose users, userGroups,
verbs, resources (group, resources, resourceNames), namespaces and
nonResourceURLs all match gives the level; no rule matching is None.
Stages: RequestReceived, ResponseStarted (watches), ResponseComplete,
Panic; `omitStages` drops some.

Records are written by the event loop as they happen, one write per line,
so a crash loses at most the line being written.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson
import yaml

from control_plane.apis.stamps import new_uid
from control_plane.security.authz import Attributes
from control_plane.security.identity import UserInfo

log = logging.getLogger(__name__)
Object = dict[str, Any]

LEVELS = ("None", "Metadata", "Request", "RequestResponse")
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")

# What `raftkube up` writes when no policy is given: every request at
# Metadata (secrets and tokens included, so their values never reach the
# log), health checks and the agents' lease renewals left out.
DEFAULT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    nonResourceURLs: ["/livez", "/readyz", "/healthz", "/version", "/metrics"]
  - level: None
    verbs: ["get", "update"]
    userGroups: ["system:nodes"]
    resources: [{group: "coordination.k8s.io", resources: ["leases"]}]
  - level: Metadata
"""


class PolicyError(ValueError):
    """The audit policy file is not a valid audit.k8s.io/v1 Policy."""


@dataclass
class Rule:
    level: str
    users: frozenset[str] = frozenset()
    user_groups: frozenset[str] = frozenset()
    verbs: frozenset[str] = frozenset()
    # (group, resources, resourceNames); empty: any resource request.
    resources: tuple[tuple[str, frozenset[str], frozenset[str]], ...] = ()
    namespaces: frozenset[str] = frozenset()
    non_resource_urls: tuple[str, ...] = ()
    omit_stages: frozenset[str] = frozenset()

    def matches(self, attrs: Attributes) -> bool:
        user = attrs.user
        if self.users and user.name not in self.users:
            return False
        if self.user_groups and not self.user_groups.intersection(user.groups):
            return False
        if self.verbs and attrs.verb not in self.verbs:
            return False
        if not attrs.resource_request:
            if self.resources or self.namespaces:
                return False
            if self.non_resource_urls:
                return any(
                    url == attrs.path or (url.endswith("*") and attrs.path.startswith(url[:-1]))
                    for url in self.non_resource_urls
                )
            return True
        if self.non_resource_urls:
            return False
        if self.namespaces and attrs.namespace not in self.namespaces:
            return False
        if self.resources:
            return any(self._resource_matches(attrs, *r) for r in self.resources)
        return True

    @staticmethod
    def _resource_matches(attrs: Attributes, group: str, resources: frozenset[str], names: frozenset[str]) -> bool:
        if group != "*" and group != attrs.api_group:
            return False
        if resources and not (
            "*" in resources
            or attrs.combined_resource in resources
            or (attrs.subresource and f"*/{attrs.subresource}" in resources)
            or (attrs.subresource and f"{attrs.resource}/*" in resources)
        ):
            return False
        return not names or attrs.name in names


@dataclass
class Policy:
    rules: list[Rule]
    omit_stages: frozenset[str] = frozenset()
    omit_managed_fields: bool = False

    def level_of(self, attrs: Attributes) -> tuple[str, frozenset[str]]:
        """The level of a request and the stages its rule omits."""
        for rule in self.rules:
            if rule.matches(attrs):
                return rule.level, self.omit_stages | rule.omit_stages
        return "None", self.omit_stages


def _strings(value: Any, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where} must be a list of strings")
    return frozenset(value)


def _stages(value: Any, where: str) -> frozenset[str]:
    stages = _strings(value, where)
    unknown = stages - set(STAGES)
    if unknown:
        raise PolicyError(f"{where}: unknown stage(s) {sorted(unknown)}; known: {', '.join(STAGES)}")
    return stages


def parse_policy(text: str, source: str = "audit policy") -> Policy:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PolicyError(f"{source}: not YAML: {e}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "Policy":
        raise PolicyError(f"{source}: want kind: Policy (audit.k8s.io/v1)")
    if doc.get("apiVersion") not in ("audit.k8s.io/v1", None):
        raise PolicyError(f"{source}: apiVersion must be audit.k8s.io/v1")
    rules = []
    for i, raw in enumerate(doc.get("rules") or []):
        where = f"{source}: rules[{i}]"
        if not isinstance(raw, dict):
            raise PolicyError(f"{where} must be a mapping")
        level = raw.get("level")
        if level not in LEVELS:
            raise PolicyError(f"{where}.level must be one of {', '.join(LEVELS)}")
        resources = []
        for j, r in enumerate(raw.get("resources") or []):
            if not isinstance(r, dict):
                raise PolicyError(f"{where}.resources[{j}] must be a mapping")
            resources.append(
                (
                    str(r.get("group", "")),
                    _strings(r.get("resources"), f"{where}.resources[{j}].resources"),
                    _strings(r.get("resourceNames"), f"{where}.resources[{j}].resourceNames"),
                )
            )
        urls = tuple(sorted(_strings(raw.get("nonResourceURLs"), f"{where}.nonResourceURLs")))
        if urls and (resources or raw.get("namespaces")):
            raise PolicyError(f"{where}: nonResourceURLs cannot be combined with resources or namespaces")
        rules.append(
            Rule(
                level=level,
                users=_strings(raw.get("users"), f"{where}.users"),
                user_groups=_strings(raw.get("userGroups"), f"{where}.userGroups"),
                verbs=_strings(raw.get("verbs"), f"{where}.verbs"),
                resources=tuple(resources),
                namespaces=_strings(raw.get("namespaces"), f"{where}.namespaces"),
                non_resource_urls=urls,
                omit_stages=_stages(raw.get("omitStages"), f"{where}.omitStages"),
            )
        )
    return Policy(rules, _stages(doc.get("omitStages"), f"{source}: omitStages"), bool(doc.get("omitManagedFields")))


def load_policy(path: str) -> Policy:
    try:
        with open(path, encoding="utf-8") as f:
            return parse_policy(f.read(), path)
    except OSError as e:
        raise PolicyError(f"cannot read the audit policy {path}: {e.strerror}") from None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class AuditEvent:
    """One request's audit state, from its receipt to its answer."""

    attrs: Attributes
    level: str
    omit: frozenset[str]
    request_uri: str
    source_ips: list[str]
    user_agent: str
    audit_id: str = field(default_factory=new_uid)
    received: str = field(default_factory=_now)
    annotations: dict[str, str] = field(default_factory=dict)
    request_object: Any = None
    impersonated: UserInfo | None = None
    # A create's object name, from its body (its path names none).
    object_name: str = ""


class Auditor:
    def __init__(self, policy: Policy, path: str):
        self.policy = policy
        self.path = path
        self._out: BinaryIO | None = None
        if path == "-":
            self._out = None
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._out = os.fdopen(fd, "ab", buffering=0)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def begin(
        self, attrs: Attributes, request_uri: str, source_ips: Iterable[str], user_agent: str
    ) -> AuditEvent | None:
        """Start auditing a request (None: its level is None)."""
        level, omit = self.policy.level_of(attrs)
        if level == "None":
            return None
        event = AuditEvent(attrs, level, omit, request_uri, [ip for ip in source_ips if ip], user_agent)
        self._write(event, "RequestReceived")
        return event

    def started(self, event: AuditEvent | None) -> None:
        """A long-running request (a watch) began answering."""
        if event is not None:
            self._write(event, "ResponseStarted", code=200)

    def finish(
        self,
        event: AuditEvent | None,
        code: int,
        response: Any = None,
        status: Object | None = None,
        panic: bool = False,
    ) -> None:
        if event is not None:
            self._write(event, "Panic" if panic else "ResponseComplete", code, response, status)

    def _write(
        self,
        event: AuditEvent,
        stage: str,
        code: int | None = None,
        response: Any = None,
        status: Object | None = None,
    ) -> None:
        if stage in event.omit:
            return
        attrs = event.attrs
        record: Object = {
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": event.level,
            "auditID": event.audit_id,
            "stage": stage,
            "requestURI": event.request_uri,
            "verb": attrs.verb,
            "user": attrs.user.as_json(),
            **({"impersonatedUser": event.impersonated.as_json()} if event.impersonated is not None else {}),
            "sourceIPs": event.source_ips,
            "userAgent": event.user_agent,
        }
        if attrs.resource_request:
            ref: Object = {"resource": attrs.resource, "apiVersion": attrs.api_version}
            if attrs.api_group:
                ref["apiGroup"] = attrs.api_group
                ref["apiVersion"] = f"{attrs.api_group}/{attrs.api_version}"
            for key, value in (
                ("namespace", attrs.namespace),
                ("name", attrs.name or event.object_name),
                ("subresource", attrs.subresource),
            ):
                if value:
                    ref[key] = value
            record["objectRef"] = ref
        if code is not None:
            response_status: Object = {"metadata": {}, "code": code}
            if status is not None and code >= 400:
                response_status.update({k: status[k] for k in ("status", "message", "reason") if status.get(k)})
            record["responseStatus"] = response_status
        if event.level in ("Request", "RequestResponse") and event.request_object is not None:
            record["requestObject"] = self._body(event.request_object)
        if event.level == "RequestResponse" and response is not None and stage != "ResponseStarted":
            record["responseObject"] = self._body(response)
        record["requestReceivedTimestamp"] = event.received
        record["stageTimestamp"] = _now()
        if event.annotations:
            record["annotations"] = event.annotations
        line = orjson.dumps(record) + b"\n"
        if self._out is None:
            os.write(1, line)
            return
        try:
            self._out.write(line)
        except OSError as e:  # a full disk must not take the API down with it
            log.error("cannot write the audit log %s: %s", self.path, e)

    def _body(self, obj: Any) -> Any:
        if self.policy.omit_managed_fields and isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
            obj = {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "managedFields"}}
        return obj
