"""The review APIs, questions answered in the response and never stored, as
Kubernetes serves them: SelfSubjectAccessReview (`kubectl auth can-i`),
SelfSubjectRulesReview (`kubectl auth can-i --list`), SubjectAccessReview
and LocalSubjectAccessReview (may someone else?), TokenReview (whose token
is this?) and SelfSubjectReview (`kubectl auth whoami`).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from control_plane.apis import errors
from control_plane.apis.resources import Resource
from control_plane.security.authn import Authenticator, Credentials, Unauthorized
from control_plane.security.authz import Attributes, Authorizer
from control_plane.security.identity import UserInfo
from control_plane.security.rbac import RbacAuthorizer

Object = dict[str, Any]


class Reviews:
    def __init__(self, authorizer: Authorizer, rbac: RbacAuthorizer | None, authenticator: Authenticator | None):
        self.authorizer = authorizer
        self.rbac = rbac
        self.authenticator = authenticator

    async def create(self, resource: Resource, namespace: str, body: Object, user: UserInfo) -> Object:
        plural = resource.plural
        spec = body.get("spec") if plural != "selfsubjectreviews" else body.get("spec") or {}
        if not isinstance(spec, dict):
            raise errors.invalid(resource.kind, "", [errors.Cause("spec", "Required value", "FieldValueRequired")])
        if plural == "tokenreviews":
            status = await self._token(spec)
        elif plural == "selfsubjectreviews":
            status = {"userInfo": user.as_json()}
        elif plural == "selfsubjectrulesreviews":
            status = self._rules(spec, user)
        elif plural == "localsubjectaccessreviews":
            status = self._local_access(resource, namespace, spec)
        else:
            subject = user if plural == "selfsubjectaccessreviews" else _subject(spec)
            status = self._access(resource, spec, subject)
        return {
            "kind": resource.kind,
            "apiVersion": resource.api_version,
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }

    def _access(self, resource: Resource, spec: Object, user: UserInfo) -> Object:
        attrs = attributes_of(resource.kind, spec, user)
        verdict = self.authorizer.authorize(attrs)
        status: Object = {"allowed": verdict.allowed}
        if verdict.reason:
            status["reason"] = verdict.reason
        return status

    def _local_access(self, resource: Resource, namespace: str, spec: Object) -> Object:
        asked = (spec.get("resourceAttributes") or {}).get("namespace", "")
        if asked and asked != namespace:
            raise errors.bad_request(
                f"spec.resourceAttributes.namespace must match the namespace of the request: {asked} != {namespace}"
            )
        spec.setdefault("resourceAttributes", {})["namespace"] = namespace
        return self._access(resource, spec, _subject(spec))

    def _rules(self, spec: Object, user: UserInfo) -> Object:
        namespace = str(spec.get("namespace") or "")
        if self.rbac is None:
            return {"resourceRules": [], "nonResourceRules": [], "incomplete": True}
        resource_rules, url_rules = [], []
        for rule in self.rbac.rules(user, namespace):
            if rule.get("nonResourceURLs"):
                url_rules.append({"verbs": rule.get("verbs") or [], "nonResourceURLs": rule["nonResourceURLs"]})
            else:
                out = {k: rule.get(k) or [] for k in ("verbs", "apiGroups", "resources")}
                if rule.get("resourceNames"):
                    out["resourceNames"] = rule["resourceNames"]
                resource_rules.append(out)
        # system:masters and the Node authorizer allow more than RBAC lists.
        incomplete = not all(g not in user.groups for g in ("system:masters", "system:nodes"))
        return {"resourceRules": resource_rules, "nonResourceRules": url_rules, "incomplete": incomplete}

    async def _token(self, spec: Object) -> Object:
        token = str(spec.get("token") or "")
        if self.authenticator is None or not token:
            return {"authenticated": False, "error": "no token given" if not token else "token review is not served"}
        try:
            user = await self.authenticator.authenticate(Credentials(authorization=f"Bearer {token}"))
        except Unauthorized as e:
            return {"authenticated": False, "error": str(e)}
        return {"authenticated": True, "user": user.as_json(), "audiences": spec.get("audiences") or []}


def _subject(spec: Object) -> UserInfo:
    user = str(spec.get("user") or "")
    groups = tuple(str(g) for g in spec.get("groups") or ())
    if not user and not groups:
        raise errors.invalid(
            "SubjectAccessReview", "", [errors.Cause("spec.user", "at least one of user or group must be specified")]
        )
    extra = {str(k): tuple(str(x) for x in v) for k, v in (spec.get("extra") or {}).items()}
    return UserInfo(user, str(spec.get("uid") or ""), groups, MappingProxyType(extra))


def attributes_of(kind: str, spec: Object, user: UserInfo) -> Attributes:
    """What an access review asks about, as authorization attributes."""
    resource_attrs = spec.get("resourceAttributes")
    url_attrs = spec.get("nonResourceAttributes")
    if isinstance(resource_attrs, dict) and not url_attrs:
        return Attributes(
            user,
            str(resource_attrs.get("verb") or ""),
            api_group=str(resource_attrs.get("group") or ""),
            api_version=str(resource_attrs.get("version") or ""),
            resource=str(resource_attrs.get("resource") or ""),
            subresource=str(resource_attrs.get("subresource") or ""),
            namespace=str(resource_attrs.get("namespace") or ""),
            name=str(resource_attrs.get("name") or ""),
            field_selector=str((resource_attrs.get("fieldSelector") or {}).get("rawSelector") or ""),
        )
    if isinstance(url_attrs, dict) and not resource_attrs:
        return Attributes(
            user, str(url_attrs.get("verb") or ""), resource_request=False, path=str(url_attrs.get("path") or "")
        )
    raise errors.invalid(
        kind,
        "",
        [errors.Cause("spec", "exactly one of nonResourceAttributes or resourceAttributes must be specified")],
    )
