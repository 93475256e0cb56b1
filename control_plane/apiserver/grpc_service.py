"""The gRPC front end of the resource API (control_plane/apipb): a thin
adapter over ApiService, as the REST handlers are. Objects travel as their
Kubernetes JSON; errors as gRPC status with the metav1.Status in the
trailer (control_plane.apis.grpc_errors)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from control_plane.apipb import resources_pb2 as pb
from control_plane.apipb import resources_pb2_grpc
from control_plane.apis import codec, errors
from control_plane.apis.errors import ApiError
from control_plane.apis.grpc_errors import grpc_code, trailer
from control_plane.apis.resources import REGISTRY, Registry, Resource
from control_plane.apiserver.access import Access
from control_plane.apiserver.managed_fields import Manager
from control_plane.apiserver.metrics import ApiMetrics
from control_plane.apiserver.patch import APPLY_PATCH, JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH
from control_plane.apiserver.service import ApiService, DeleteOptions, ListOptions, VirtualLists
from control_plane.security.authz import Attributes
from control_plane.security.identity import UserInfo

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Resources"].full_name
MAX_OBJECT_BYTES = 3 * 1024 * 1024  # as the REST API's body limit
T = TypeVar("T")

# The authorization verb of each call (an apply is a patch, as in Kubernetes).
AUTHZ_VERBS = {
    "GET": "get",
    "LIST": "list",
    "WATCH": "watch",
    "CREATE": "create",
    "UPDATE": "update",
    "PATCH": "patch",
    "APPLY": "patch",
    "DELETE": "delete",
    "DELETECOLLECTION": "deletecollection",
}
PATCH_TYPES = {
    pb.PATCH_TYPE_MERGE: MERGE_PATCH,
    pb.PATCH_TYPE_JSON: JSON_PATCH,
    pb.PATCH_TYPE_STRATEGIC_MERGE: STRATEGIC_MERGE_PATCH,
    pb.PATCH_TYPE_APPLY: APPLY_PATCH,
}
EVENT_TYPES = {
    "ADDED": pb.EVENT_TYPE_ADDED,
    "MODIFIED": pb.EVENT_TYPE_MODIFIED,
    "DELETED": pb.EVENT_TYPE_DELETED,
    "BOOKMARK": pb.EVENT_TYPE_BOOKMARK,
    "ERROR": pb.EVENT_TYPE_ERROR,
}


def dumps(obj: Any) -> bytes:
    return codec.dumps(obj)


class ResourcesService(resources_pb2_grpc.ResourcesServicer):
    def __init__(
        self,
        service: ApiService,
        metrics: ApiMetrics,
        registry: Registry = REGISTRY,
        virtual_lists: VirtualLists | None = None,
        access: Access | None = None,
    ):
        self.service = service
        self.access = access or Access(None)
        self.metrics = metrics
        self.registry = registry
        self.virtual_lists = virtual_lists or {}

    # -- plumbing ---------------------------------------------------------------------

    def _resource(self, ref: pb.ResourceRef) -> Resource:
        resource = self.registry.lookup(ref.group, ref.version or "v1", ref.resource)
        if resource is None:
            what = f"{ref.resource}.{ref.group}/{ref.version}" if ref.group else f"{ref.resource}/{ref.version}"
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({what})")
        if ref.subresource and ref.subresource not in resource.subresources:
            raise ApiError(404, "NotFound", f"{resource.plural} have no subresource {ref.subresource!r}")
        if ref.namespace and not resource.namespaced:
            raise errors.bad_request(f"{resource.plural} are not namespaced")
        return resource

    @staticmethod
    def _object(data: bytes, allow_list: bool = False, yaml_ok: bool = False) -> Any:
        if len(data) > MAX_OBJECT_BYTES:
            raise ApiError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_OBJECT_BYTES}")
        try:
            obj = codec.load_yaml(data) if yaml_ok else codec.loads(data)
        except codec.DecodeError as e:
            raise errors.bad_request(f"the object could not be decoded: {e}") from None
        if not isinstance(obj, dict) and not (allow_list and isinstance(obj, list)):
            raise errors.bad_request("the object must be a JSON object")
        return obj

    async def _call(
        self,
        context: grpc.aio.ServicerContext,
        verb: str,
        ref: pb.ResourceRef,
        fn: Callable[[UserInfo], Awaitable[T]],
        field_selector: str = "",
        body: bytes = b"",
    ) -> T:
        """Authenticate, authorize and audit a call, run it, count it."""
        started = time.perf_counter()
        label = ref.resource + (f"/{ref.subresource}" if ref.subresource else "")
        code = 500
        audit = None
        status: dict[str, Any] | None = None
        result: Any = None
        try:
            user = await self.access.authenticate_grpc(context)
            attrs = self._attributes(user, verb, ref, field_selector)
            audit = self.access.begin_grpc_audit(
                attrs, lambda: _request_uri(ref), context, lambda: _agent(context, full=True)
            )
            if audit is not None and body:
                with contextlib.suppress(*codec.DecodeError):
                    decoded = codec.loads(body)
                    audit.request_object = decoded
                    if isinstance(decoded, dict):
                        audit.object_name = str((decoded.get("metadata") or {}).get("name") or "")
            self.access.authorize(attrs, audit)
            result = await fn(user)
            code = 201 if verb == "CREATE" else 200
            return result
        except ApiError as e:
            code = e.code
            status = e.status()
            await abort(context, e)
            raise  # abort raises
        except asyncio.CancelledError:
            code = 499
            raise
        except Exception as e:
            log.exception("gRPC %s %s failed", verb, label)
            await abort(context, errors.internal(f"internal error: {e!r}"))
            raise
        finally:
            self.metrics.observe(verb, label, code, time.perf_counter() - started)
            if audit is not None:
                response = None
                payload = getattr(result, "object", None)
                if audit.level == "RequestResponse" and isinstance(payload, bytes) and payload:
                    with contextlib.suppress(*codec.DecodeError):
                        response = codec.loads(payload)
                self.access.finish_audit(audit, code, response, status)

    def _attributes(self, user: UserInfo, verb: str, ref: pb.ResourceRef, field_selector: str = "") -> Attributes:
        return Attributes(
            user,
            AUTHZ_VERBS.get(verb, verb.lower()),
            api_group=ref.group,
            api_version=ref.version or "v1",
            resource=ref.resource,
            subresource=ref.subresource,
            namespace=ref.namespace,
            name=ref.name,
            field_selector=field_selector,
        )

    # -- methods ---------------------------------------------------------------------------

    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> pb.ObjectResponse:
        ref = request.ref

        async def get(user: UserInfo) -> pb.ObjectResponse:
            r = self._resource(ref)
            if ref.subresource == "scale":
                return pb.ObjectResponse(
                    object=dumps(await self.service.get_scale(r, ref.namespace, ref.name, request.resource_version))
                )
            obj = await self.service.get(r, ref.namespace, ref.name, request.resource_version)
            return pb.ObjectResponse(object=dumps(obj))

        return await self._call(context, "GET", ref, get)

    async def List(self, request: pb.ListRequest, context: grpc.aio.ServicerContext) -> pb.ListResponse:
        async def list_(user: UserInfo) -> pb.ListResponse:
            r = self._resource(request.ref)
            if r.virtual:
                items = await self.virtual_lists[r.plural]()
                return pb.ListResponse(items=[dumps(i) for i in items])
            raw = await self.service.list_raw(r, request.ref.namespace, _list_options(request))
            return pb.ListResponse(
                resource_version=str(raw.revision), items=raw.items, **{"continue": raw.continue_token}
            )

        return await self._call(context, "LIST", request.ref, list_, request.field_selector)

    async def Create(self, request: pb.CreateRequest, context: grpc.aio.ServicerContext) -> pb.ObjectResponse:
        ref = request.ref

        async def create(user: UserInfo) -> pb.ObjectResponse:
            r = self._resource(ref)
            body = self._object(request.object)
            if ref.subresource == "binding":
                bound = await self.service.bind(r, ref.namespace, ref.name, body, user=user)
                return pb.ObjectResponse(object=dumps(bound))
            if ref.subresource == "eviction":
                opts = _delete_options_from_json(body.get("deleteOptions") or {})
                evicted = await self.service.evict(r, ref.namespace, ref.name, opts, user=user)
                return pb.ObjectResponse(object=dumps(evicted))
            if ref.subresource == "token":
                token = await self.service.create_token(ref.namespace, ref.name, body, request.dry_run)
                return pb.ObjectResponse(object=dumps(token))
            manager = Manager(request.field_manager or _agent(context))
            created = await self.service.create_json(r, ref.namespace, body, request.dry_run, manager, user=user)
            return pb.ObjectResponse(object=created)

        return await self._call(context, "CREATE", ref, create, body=request.object)

    async def Update(self, request: pb.UpdateRequest, context: grpc.aio.ServicerContext) -> pb.ObjectResponse:
        ref = request.ref

        async def update(user: UserInfo) -> pb.ObjectResponse:
            r = self._resource(ref)
            body = self._object(request.object)
            manager_name = request.field_manager or _agent(context)
            if ref.subresource == "scale":
                scale = await self.service.update_scale(
                    r, ref.namespace, ref.name, body, request.dry_run, manager_name, user=user
                )
                return pb.ObjectResponse(object=dumps(scale))
            manager = Manager(manager_name, "Update", ref.subresource)
            obj = await self.service.update(
                r, ref.namespace, ref.name, body, ref.subresource, request.dry_run, manager, user=user
            )
            return pb.ObjectResponse(object=dumps(obj))

        return await self._call(context, "UPDATE", ref, update, body=request.object)

    async def Patch(self, request: pb.PatchRequest, context: grpc.aio.ServicerContext) -> pb.ObjectResponse:
        ref = request.ref
        apply = request.type == pb.PATCH_TYPE_APPLY

        async def patch(user: UserInfo) -> pb.ObjectResponse:
            r = self._resource(ref)
            patch_type = PATCH_TYPES.get(request.type)
            if patch_type is None:
                raise errors.bad_request("the patch type must be given (PATCH_TYPE_MERGE, _JSON, ...)")
            body = self._object(request.patch, allow_list=request.type == pb.PATCH_TYPE_JSON, yaml_ok=apply)
            manager = request.field_manager if apply else request.field_manager or _agent(context)
            obj = await self.service.patch(
                r,
                ref.namespace,
                ref.name,
                patch_type,
                body,
                ref.subresource,
                request.dry_run,
                manager,
                request.force,
                user=user,
            )
            return pb.ObjectResponse(object=dumps(obj))

        return await self._call(context, "APPLY" if apply else "PATCH", ref, patch, body=request.patch)

    async def Delete(self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext) -> pb.ObjectResponse:
        ref = request.ref

        async def delete(user: UserInfo) -> pb.ObjectResponse:
            r = self._resource(ref)
            result = await self.service.delete(r, ref.namespace, ref.name, _delete_options(request.options), user=user)
            return pb.ObjectResponse(object=dumps(result))

        return await self._call(context, "DELETE", ref, delete)

    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListResponse:
        selection = request.selection

        async def delete_collection(user: UserInfo) -> pb.ListResponse:
            r = self._resource(selection.ref)
            listed = await self.service.delete_collection(
                r, selection.ref.namespace, _list_options(selection), _delete_options(request.options), user=user
            )
            return pb.ListResponse(
                resource_version=listed["metadata"]["resourceVersion"], items=[dumps(i) for i in listed["items"]]
            )

        return await self._call(context, "DELETECOLLECTION", selection.ref, delete_collection, selection.field_selector)

    async def Watch(self, request: pb.WatchRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WatchEvent]:
        ref = request.ref
        started = time.perf_counter()
        label = ref.resource
        code = 200
        audit = None
        try:
            user = await self.access.authenticate_grpc(context)
            attrs = self._attributes(user, "WATCH", ref, request.field_selector)
            audit = self.access.begin_grpc_audit(
                attrs, lambda: _request_uri(ref, watch=True), context, lambda: _agent(context, full=True)
            )
            self.access.authorize(attrs, audit)
            r = self._resource(ref)
            opts = ListOptions(
                label_selector=request.label_selector,
                field_selector=request.field_selector,
                resource_version=request.resource_version,
            )
            self.service.check_list_options(opts)
        except ApiError as e:
            self.metrics.observe("WATCH", label, e.code, time.perf_counter() - started)
            self.access.finish_audit(audit, e.code, None, e.status())
            await abort(context, e)
            return
        watchers = self.metrics.watchers.labels(r.plural)
        watchers.inc()
        self.access.audit_started(audit)
        try:
            async with asyncio.timeout(request.timeout_seconds or None):
                events = self.service.watch(r, ref.namespace, opts, request.allow_bookmarks, ref.name)
                async for event in events:
                    yield pb.WatchEvent(type=EVENT_TYPES[event["type"]], object=dumps(event["object"]))
        except ApiError as e:
            # Once the stream has started, errors travel as ERROR events.
            code = e.code
            yield pb.WatchEvent(type=pb.EVENT_TYPE_ERROR, object=dumps(e.status()))
        except TimeoutError:
            pass
        finally:
            watchers.dec()
            self.metrics.observe("WATCH", label, code, time.perf_counter() - started)
            self.access.finish_audit(audit, code)


async def abort(context: grpc.aio.ServicerContext, error: ApiError) -> None:
    """End a call with the Kubernetes status of `error` (code and trailer)."""
    context.set_trailing_metadata(trailer(error))
    await context.abort(grpc_code(error), error.message)


def _agent(context: grpc.aio.ServicerContext, full: bool = False) -> str:
    """The caller's user agent, or its name alone (for a fieldManager)."""
    for key, value in context.invocation_metadata() or ():
        if key == "user-agent":
            if full:
                return str(value)
            return str(value).split("/", 1)[0].split(" ", 1)[0][:128] or "unknown"
    return "unknown"


def _request_uri(ref: pb.ResourceRef, watch: bool = False) -> str:
    """The REST path of what a gRPC call names, for the audit log."""
    parts = ["/api", ref.version or "v1"] if not ref.group else ["/apis", ref.group, ref.version or "v1"]
    if ref.namespace:
        parts += ["namespaces", ref.namespace]
    parts.append(ref.resource)
    if ref.name:
        parts.append(ref.name)
    if ref.subresource:
        parts.append(ref.subresource)
    return "/".join(parts) + ("?watch=true" if watch else "")


def _list_options(request: pb.ListRequest) -> ListOptions:
    return ListOptions(
        label_selector=request.label_selector,
        field_selector=request.field_selector,
        limit=max(request.limit, 0),
        continue_token=getattr(request, "continue"),
        resource_version=request.resource_version,
        resource_version_match=request.resource_version_match,
    )


def _delete_options(opts: pb.DeleteOptions) -> DeleteOptions:
    preconditions = {}
    if opts.precondition_uid:
        preconditions["uid"] = opts.precondition_uid
    if opts.precondition_resource_version:
        preconditions["resourceVersion"] = opts.precondition_resource_version
    return DeleteOptions.parse(
        opts.grace_period_seconds if opts.HasField("grace_period_seconds") else None,
        opts.propagation_policy or None,
        preconditions,
        opts.dry_run,
    )


def _delete_options_from_json(body: dict[str, Any]) -> DeleteOptions:
    return DeleteOptions.parse(
        body.get("gracePeriodSeconds"),
        body.get("propagationPolicy"),
        body.get("preconditions"),
        bool(body.get("dryRun")),
    )
