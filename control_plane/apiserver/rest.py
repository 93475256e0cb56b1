"""The Kubernetes REST front end (aiohttp): paths, verbs, query parameters,
content types and status codes as kube-apiserver answers them. It parses
requests and renders responses; ApiService holds the semantics.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from control_plane.apis import codec, errors
from control_plane.apis.errors import ApiError
from control_plane.apis.resources import REGISTRY, Registry, Resource
from control_plane.apiserver import discovery, k8s_protobuf, openapi, tables
from control_plane.apiserver.access import Access, certificate_identity, kube_verb, request_attributes
from control_plane.apiserver.managed_fields import Manager
from control_plane.apiserver.metrics import ApiMetrics
from control_plane.apiserver.node_logs import LogOptions, NodeLogs
from control_plane.apiserver.patch import APPLY_PATCH
from control_plane.apiserver.service import ApiService, DeleteOptions, ListOptions, VirtualLists
from control_plane.security.authn import Credentials
from control_plane.security.identity import UserInfo

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 3 * 1024 * 1024
JSON = "application/json"


@dataclass
class Target:
    """What a resource path names."""

    resource: Resource
    namespace: str = ""
    name: str = ""
    subresource: str = ""


@dataclass
class RequestInfo:
    """What a request is, for metrics: its Kubernetes verb and resource."""

    verb: str
    resource: str


def request_verb(method: str, t: Target, request: web.Request) -> str:
    """The verb of a resource request, as kube-apiserver's metrics name it
    (authorization's verb, but a server-side apply is "apply")."""
    if method == "PATCH" and _is_apply(request.headers.get("Content-Type", "")):
        return "apply"
    return kube_verb(method, bool(t.name), _flag(request.query.get("watch")))


def _is_apply(content_type: str) -> bool:
    return content_type.split(";")[0].strip() == APPLY_PATCH


class RestApi:
    def __init__(
        self,
        service: ApiService,
        metrics: ApiMetrics,
        server_address: str = "",
        registry: Registry = REGISTRY,
        readiness: Callable[[], Awaitable[list[tuple[str, bool, str]]]] | None = None,
        virtual_lists: VirtualLists | None = None,
        access: Access | None = None,
        node_logs: NodeLogs | None = None,
    ):
        self.service = service
        # None: --insecure (no authentication; everyone is a cluster admin).
        self.access = access or Access(None)
        self.node_logs = node_logs
        self.metrics = metrics
        self.registry = registry
        self.server_address = server_address
        self.readiness = readiness
        self.virtual_lists = virtual_lists or {}
        self.app = web.Application(client_max_size=MAX_BODY_BYTES)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    # -- entry ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        # Non-resource paths count as "get"; a resource request as its verb,
        # set as soon as the path is understood, so its errors count there.
        info = RequestInfo("get" if request.method in ("GET", "HEAD") else request.method.lower(), "")
        code = 500
        audit = None
        response: web.StreamResponse | None = None
        status: dict[str, Any] | None = None
        try:
            transport = request.transport
            peer = transport.get_extra_info("peercert") if transport is not None else None
            user = await self.access.authenticate(
                Credentials(certificate_identity(peer), request.headers.get("Authorization", ""))
            )
            impersonated = user
            if any(k.lower().startswith("impersonate-") for k in request.headers):
                impersonated = self.access.impersonate(user, request.headers.items())
            attrs = request_attributes(request.method, request.path, request.query, user)
            audit = self.access.begin_audit(
                attrs, request.path_qs, [request.remote or ""], request.headers.get("User-Agent", "")
            )
            request["audit"] = audit
            if impersonated is not user:
                attrs = replace(attrs, user=impersonated)
                if audit is not None:
                    audit.impersonated = impersonated
                user = impersonated
            self.access.authorize(attrs, audit)
            response = await self._dispatch(request, info, user)
            code = response.status
            return response
        except ApiError as e:
            code = e.code
            status = e.status()
            response = _json(status, e.code)
            if e.details.get("retryAfterSeconds"):
                response.headers["Retry-After"] = str(e.details["retryAfterSeconds"])
            if e.code == 401:
                response.headers["WWW-Authenticate"] = 'Basic realm="kubernetes-master"'
            return response
        except asyncio.CancelledError:
            code = 499
            raise
        except Exception as e:  # an unexpected failure is a 500 with a Status body
            log.exception("request %s %s failed", request.method, request.path)
            status = errors.internal(f"internal error: {e!r}").status()
            response = _json(status, 500)
            return response
        finally:
            self.metrics.observe(info.verb.upper(), info.resource, code, time.perf_counter() - started)
            if audit is not None:
                body = None
                if audit.level == "RequestResponse" and isinstance(response, web.Response) and response.body:
                    with contextlib.suppress(*codec.DecodeError, TypeError):
                        body = codec.loads(bytes(response.body))  # type: ignore[arg-type]
                self.access.finish_audit(audit, code, body, status)

    async def _dispatch(self, request: web.Request, info: RequestInfo, user: UserInfo) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        method = request.method
        if not parts:
            return _json({"paths": ["/api", "/api/v1", "/apis", "/version", "/livez", "/readyz", "/metrics"]})
        head = parts[0]
        if head in ("livez", "healthz"):
            return web.Response(text="ok")
        if head == "readyz":
            return await self._readyz(request)
        if head == "version":
            return _json(discovery.version_info())
        if head == "api" and len(parts) == 1:
            return _json(discovery.core_versions(self.server_address))
        if head == "apis" and len(parts) == 1:
            return _json(discovery.group_list(self.registry))
        if head == "openapi" and len(parts) >= 2 and parts[1] == "v3":
            doc = (
                openapi.root_document(self.registry)
                if len(parts) == 2
                else openapi.group_version_document(
                    self.registry, *(("", parts[3]) if parts[2] == "api" and len(parts) == 4 else tuple(parts[3:5]))
                )
                if len(parts) in (4, 5)
                else None
            )
            if doc is None:
                raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json(doc)
        if head == "openapi":
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        if head == "api" and len(parts) == 2:
            doc = discovery.resource_list(self.registry, "", parts[1])
            if doc is None:
                raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json(doc)
        if head == "apis" and len(parts) == 2:
            group_doc = discovery.group(self.registry, parts[1])
            if group_doc is None:
                raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json(group_doc)
        if head == "apis" and len(parts) == 3:
            doc = discovery.resource_list(self.registry, parts[1], parts[2])
            if doc is None:
                raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json(doc)
        target = self._target(parts)
        label = target.resource.plural + (f"/{target.subresource}" if target.subresource else "")
        info.verb, info.resource = request_verb(method, target, request), label
        handler = {
            "GET": self._get,
            "POST": self._post,
            "PUT": self._put,
            "PATCH": self._patch,
            "DELETE": self._delete,
        }.get(method)
        if handler is None:
            raise errors.method_not_allowed(
                f"the server does not allow this method on the requested resource ({method})"
            )
        return await handler(request, target, user)

    def _target(self, parts: list[str]) -> Target:
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3 and self.registry.lookup(group, version, rest[2]) is not None:
            namespace, rest = rest[1], rest[2:]
        resource = self.registry.lookup(group, version, rest[0])
        if resource is None or len(rest) > 3:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) >= 2 else ""
        sub = rest[2] if len(rest) == 3 else ""
        if sub and sub not in resource.subresources:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        if namespace and not resource.namespaced:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        return Target(resource, namespace, name, sub)

    # -- verbs ------------------------------------------------------------------------

    async def _get(self, request: web.Request, t: Target, user: UserInfo) -> web.StreamResponse:
        q = request.query
        if _flag(q.get("watch")):
            return await self._watch(request, t)
        if t.name:
            if t.subresource == "scale":
                return _json(
                    await self.service.get_scale(t.resource, t.namespace, t.name, q.get("resourceVersion", ""))
                )
            if t.subresource == "log":
                return await self._log(request, t)
            obj = await self.service.get(t.resource, t.namespace, t.name, q.get("resourceVersion", ""))
            return self._render(request, t.resource, obj, [obj])
        if t.resource.virtual:
            items = await self.virtual_lists[t.resource.plural]()
            listed: dict[str, Any] = {
                "kind": f"{t.resource.kind}List",
                "apiVersion": "v1",
                "metadata": {},
                "items": items,
            }
            return self._render(request, t.resource, listed, items, is_list=True)
        if _wants_table(request.headers.get("Accept", "")):
            listed = await self.service.list(t.resource, t.namespace, _list_options(q))
            return self._render(request, t.resource, listed, listed["items"], is_list=True)
        raw = await self.service.list_raw(t.resource, t.namespace, _list_options(q))
        head = b'{"kind":"%sList","apiVersion":"%s","metadata":%s,"items":[' % (
            t.resource.kind.encode(),
            t.resource.api_version.encode(),
            codec.dumps(raw.metadata()),
        )
        body = head + b",".join(raw.items) + b"]}"
        return web.Response(body=body, content_type=JSON)

    async def _post(self, request: web.Request, t: Target, user: UserInfo) -> web.StreamResponse:
        body = await _body(request)
        dry_run = _dry_run(request)
        if t.subresource == "binding":
            return _json(await self.service.bind(t.resource, t.namespace, t.name, body, user=user), 201)
        if t.subresource == "eviction":
            opts = _delete_options_from(body.get("deleteOptions") or {}, request)
            return _json(await self.service.evict(t.resource, t.namespace, t.name, opts, user=user), 201)
        if t.subresource == "token":
            return _json(await self.service.create_token(t.namespace, t.name, body, dry_run), 201)
        if t.name:
            raise errors.method_not_allowed("POST is for creating objects in a collection")
        namespace = t.namespace or _body_namespace(body)
        created = await self.service.create_json(
            t.resource, namespace, body, dry_run, Manager(_field_manager(request)), user=user
        )
        return web.Response(body=created, status=201, content_type=JSON)

    async def _put(self, request: web.Request, t: Target, user: UserInfo) -> web.StreamResponse:
        if not t.name:
            raise errors.method_not_allowed("PUT needs an object name")
        body = await _body(request)
        manager = _field_manager(request)
        if t.subresource == "scale":
            scale = await self.service.update_scale(
                t.resource, t.namespace, t.name, body, _dry_run(request), manager, user=user
            )
            return _json(scale)
        obj = await self.service.update(
            t.resource,
            t.namespace,
            t.name,
            body,
            t.subresource,
            _dry_run(request),
            Manager(manager, "Update", t.subresource),
            user=user,
        )
        return _json(obj)

    async def _patch(self, request: web.Request, t: Target, user: UserInfo) -> web.StreamResponse:
        if not t.name:
            raise errors.method_not_allowed("PATCH needs an object name")
        content_type = request.headers.get("Content-Type", "")
        body = await _body(request, allow_list=True)
        apply = _is_apply(content_type)
        obj = await self.service.patch(
            t.resource,
            t.namespace,
            t.name,
            content_type,
            body,
            t.subresource,
            _dry_run(request),
            request.query.get("fieldManager", "") if apply else _field_manager(request),
            _flag(request.query.get("force")),
            user=user,
        )
        return _json(obj)

    async def _delete(self, request: web.Request, t: Target, user: UserInfo) -> web.StreamResponse:
        text = await request.text()
        body: dict[str, Any] = {}
        if text.strip():
            parsed = _parse(text, request.headers.get("Content-Type", JSON))
            if not isinstance(parsed, dict):
                raise errors.bad_request("DeleteOptions must be an object")
            body = parsed
        opts = _delete_options_from(body, request)
        if not t.name:
            listed = await self.service.delete_collection(
                t.resource, t.namespace, _list_options(request.query), opts, user=user
            )
            return _json(listed)
        result = await self.service.delete(t.resource, t.namespace, t.name, opts, user=user)
        return _json(result)

    # -- watch ------------------------------------------------------------------------

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        opts = _list_options(q)
        self.service.check_list_options(opts)  # bad selectors are a 400, not a stream
        try:
            timeout = float(q.get("timeoutSeconds") or 1800)
        except ValueError:
            raise errors.bad_request("timeoutSeconds must be a number") from None
        bookmarks = _flag(q.get("allowWatchBookmarks"))
        response = web.StreamResponse(status=200, headers={"Content-Type": JSON})
        response.enable_chunked_encoding()
        await response.prepare(request)
        self.access.audit_started(request.get("audit"))
        watchers = self.metrics.watchers.labels(t.resource.plural)
        watchers.inc()
        as_table = _wants_table(request.headers.get("Accept", ""))
        first_table = True
        try:
            async with asyncio.timeout(timeout):
                async for event in self.service.watch(t.resource, t.namespace, opts, bookmarks, t.name):
                    if as_table and event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        # Each event carries a one-row Table; only the first
                        # one repeats the column definitions.
                        rendered = tables.table(t.resource.plural, [event["object"]])
                        if not first_table:
                            rendered["columnDefinitions"] = []
                        first_table = False
                        event = {"type": event["type"], "object": rendered}
                    await response.write(_line(event))
        except ApiError as e:
            # Once the stream has started, errors travel as ERROR events.
            with contextlib.suppress(ConnectionResetError):
                await response.write(_line({"type": "ERROR", "object": e.status()}))
        except (TimeoutError, ConnectionResetError):
            pass
        finally:
            watchers.dec()
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    # -- rendering ----------------------------------------------------------------------

    def _render(
        self,
        request: web.Request,
        resource: Resource,
        body: dict[str, Any],
        objects: list[dict[str, Any]],
        is_list: bool = False,
    ) -> web.Response:
        if _wants_table(request.headers.get("Accept", "")):
            list_meta = (
                body.get("metadata")
                if is_list
                else {"resourceVersion": (body.get("metadata") or {}).get("resourceVersion", "")}
            )
            return _json(tables.table(resource.plural, objects, list_meta))
        return _json(body)

    async def _log(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        container, node_name = await self.service.log_target(t.resource, t.namespace, t.name, q.get("container", ""))
        if not node_name:  # not scheduled: no log yet, an empty one as Kubernetes answers
            return web.Response(body=b"", content_type="text/plain")
        if self.node_logs is None:
            raise errors.unavailable("this API server does not read logs from node agents")
        nodes = self.registry.lookup("", "v1", "nodes")
        pods = self.registry.lookup("", "v1", "pods")
        assert nodes is not None and pods is not None
        node = await self.service.read(nodes, "", node_name)
        if node is None:
            raise errors.unavailable(
                f'cannot read the log of container "{container}" of pod "{t.name}" on node "{node_name}": '
                "the node is not registered"
            )
        pod = await self.service.get(pods, t.namespace, t.name, "0")
        try:
            opts = LogOptions(
                follow=_flag(q.get("follow")) if "follow" in q else False,
                previous=_flag(q.get("previous")) if "previous" in q else False,
                tail_lines=int(q.get("tailLines") or 0),
                since_seconds=_since_seconds(q.get("sinceSeconds"), q.get("sinceTime")),
                timestamps=_flag(q.get("timestamps")) if "timestamps" in q else False,
                limit_bytes=int(q.get("limitBytes") or 0),
            )
        except ValueError as e:
            reason = str(e) if str(e).startswith(("at most", "since")) else ""
            raise errors.bad_request(reason or "tailLines, sinceSeconds and limitBytes must be integers") from None
        chunks = self.node_logs.stream(node, t.namespace, t.name, pod["metadata"].get("uid", ""), container, opts)
        # An error before the first byte is a Status, not a broken stream.
        first = await anext(aiter(chunks), b"")
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        try:
            if first:
                await response.write(first)
            async for chunk in chunks:
                await response.write(chunk)
        except (ConnectionResetError, ApiError):
            pass
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _readyz(self, request: web.Request) -> web.Response:
        checks = await self.readiness() if self.readiness else []
        ok = all(passed for _, passed, _ in checks)
        if "verbose" in request.query:
            lines = [
                f"[{'+' if passed else '-'}]{name} {'ok' if passed else 'failed: ' + why}"
                for name, passed, why in checks
            ]
            lines.append(f"readyz check {'passed' if ok else 'failed'}")
            return web.Response(text="\n".join(lines) + "\n", status=200 if ok else 500)
        return web.Response(text="ok" if ok else "not ready", status=200 if ok else 500)


# -- helpers ---------------------------------------------------------------------------


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=codec.dumps(body), status=status, content_type=JSON)


def _line(event: dict[str, Any]) -> bytes:
    return codec.dumps(event) + b"\n"


def _since_seconds(seconds: str | None, since_time: str | None) -> int:
    """sinceSeconds, or sinceTime (RFC 3339) as seconds before now; not both, as in Kubernetes."""
    if seconds and since_time:
        raise ValueError("at most one of sinceTime or sinceSeconds may be specified")
    if since_time:
        try:
            at = datetime.datetime.fromisoformat(since_time.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"sinceTime {since_time!r} is not an RFC 3339 time") from None
        if at.tzinfo is None:
            raise ValueError(f"sinceTime {since_time!r} is not an RFC 3339 time (no time zone)")
        return max(1, math.ceil(time.time() - at.timestamp()))
    value = int(seconds or 0)
    if value < 0:
        raise ValueError("sinceSeconds must be positive")
    return value


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1", "")


def _wants_table(accept: str) -> bool:
    return "as=Table" in accept


def _dry_run(request: web.Request) -> bool:
    values = request.query.getall("dryRun", [])
    for v in values:
        if v != "All":
            raise errors.bad_request(f'unsupported dryRun value {v!r}: only "All" is supported')
    return bool(values)


def _parse(text: str, content_type: str) -> Any:
    kind = content_type.split(";")[0].strip()
    try:
        if kind in ("application/yaml", APPLY_PATCH, "text/yaml"):
            return codec.load_yaml(text)
        return codec.loads(text)
    except codec.DecodeError as e:
        raise errors.bad_request(f"the body of the request could not be decoded: {e}") from None


async def _body(request: web.Request, allow_list: bool = False) -> dict[str, Any]:
    content_type = request.headers.get("Content-Type", JSON)
    kind = content_type.split(";")[0].strip()
    if kind == k8s_protobuf.CONTENT_TYPE:
        decoded = k8s_protobuf.decode(await _read(request))
        _audit_body(request, decoded)
        return decoded
    known = (
        JSON,
        "application/yaml",
        "text/yaml",
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
        APPLY_PATCH,
        "",
    )
    if kind not in known:
        raise errors.unsupported_media_type(content_type)
    body = _parse((await _read(request)).decode("utf-8", errors="replace"), content_type)
    _audit_body(request, body)
    if isinstance(body, list) and allow_list:
        return body  # type: ignore[return-value]
    if not isinstance(body, dict):
        raise errors.bad_request("the body of the request must be an object")
    return body


def _audit_body(request: web.Request, body: Any) -> None:
    """What the audit record of this request keeps of its body."""
    audit = request.get("audit")
    if audit is None:
        return
    if audit.level in ("Request", "RequestResponse"):
        audit.request_object = codec.clone(body)  # as received: the service completes the object
    if isinstance(body, dict):
        audit.object_name = str((body.get("metadata") or {}).get("name") or "")


async def _read(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise errors.ApiError(
            413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_BODY_BYTES}"
        ) from None


def _body_namespace(body: dict[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("namespace") or "")


def _list_options(q: Any) -> ListOptions:
    try:
        limit = int(q.get("limit") or 0)
    except ValueError:
        raise errors.bad_request("limit must be an integer") from None
    return ListOptions(
        label_selector=q.get("labelSelector", ""),
        field_selector=q.get("fieldSelector", ""),
        limit=max(limit, 0),
        continue_token=q.get("continue", ""),
        resource_version=q.get("resourceVersion", ""),
        resource_version_match=q.get("resourceVersionMatch", ""),
    )


def _delete_options_from(body: dict[str, Any], request: web.Request) -> DeleteOptions:
    q = request.query
    dry_run = bool(body.get("dryRun")) or bool(q.getall("dryRun", []))
    return DeleteOptions.parse(
        body.get("gracePeriodSeconds", q.get("gracePeriodSeconds")),
        body.get("propagationPolicy", q.get("propagationPolicy")),
        body.get("preconditions"),
        dry_run,
    )


def _field_manager(request: web.Request) -> str:
    """The fieldManager of a write: the parameter, else the client's name
    from its User-Agent, as kube-apiserver defaults it."""
    given = request.query.get("fieldManager")
    if given:
        return given
    agent = request.headers.get("User-Agent", "")
    return agent.split("/", 1)[0][:128] or "unknown"
