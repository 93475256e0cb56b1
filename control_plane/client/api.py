"""ApiClient: the asyncio gRPC client of the resource API that every
component uses (scheduler, controllers, node agents, tools), over any
number of masters, failing over between them.

Objects are plain dicts in their Kubernetes JSON shape. Failures are
ApiErrors, as the REST API would answer: a 404 is NotFound, a stale write a
409, a watch from a compacted revision a 410.

Retries are made only where they are safe, as ha.client does for the store:
a read moves on to the next master when its master is unavailable; a write
moves on only when it surely changed nothing (no connection, or the master
answered 503 "not committed"). Anything else is raised: a write whose
connection broke in flight may have happened (504, outcome unknown).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

from control_plane.apipb import resources_pb2 as pb
from control_plane.apipb import resources_pb2_grpc
from control_plane.apis import codec, errors
from control_plane.apis.errors import ApiError
from control_plane.apis.grpc_errors import from_rpc_error, from_status
from control_plane.apis.resources import REGISTRY, Resource
from control_plane.client.credentials import INSECURE, ClientCredentials
from ha.client import never_reached_store

log = logging.getLogger(__name__)

Object = dict[str, Any]
T = TypeVar("T")

MAX_MESSAGE_BYTES = 8 << 20
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),  # lists are as large as they are
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # A master that stops answering (SIGSTOP, a partition) is noticed by
    # keepalive pings rather than by the next request's timeout.
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def open_channel(
    endpoint: str, credentials: grpc.ChannelCredentials | None, options: Sequence[tuple[str, Any]] = CHANNEL_OPTIONS
) -> grpc.aio.Channel:
    """A channel to a master (or an agent): TLS with `credentials`, plaintext without."""
    if credentials is None:
        return grpc.aio.insecure_channel(endpoint, options=options)
    return grpc.aio.secure_channel(endpoint, credentials, options=options)


PATCH_TYPES = {
    "merge": pb.PATCH_TYPE_MERGE,
    "json": pb.PATCH_TYPE_JSON,
    "strategic": pb.PATCH_TYPE_STRATEGIC_MERGE,
    "apply": pb.PATCH_TYPE_APPLY,
}
EVENT_NAMES = {v: k.removeprefix("EVENT_TYPE_") for k, v in pb.EventType.items()}


def resource(plural: str, group: str = "", version: str = "v1") -> Resource:
    """A resource type by its plural (and group): resource("deployments", "apps")."""
    found = REGISTRY.lookup(group, version, plural)
    if found is None:
        raise ValueError(f"unknown resource {plural!r} in group {group!r} version {version!r}")
    return found


def _ref(r: Resource, namespace: str = "", name: str = "", subresource: str = "") -> pb.ResourceRef:
    return pb.ResourceRef(
        group=r.group, version=r.version, resource=r.plural, namespace=namespace, name=name, subresource=subresource
    )


def _dumps(obj: Any) -> bytes:
    return codec.dumps(obj)


def _transport_error(e: grpc.RpcError) -> ApiError:
    code = e.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.timeout(f"no answer in time; the outcome is unknown: {e.details()}")
    if code == grpc.StatusCode.UNAVAILABLE:
        return errors.unavailable(f"no master could be reached: {e.details()}")
    return errors.internal(f"gRPC {code.name}: {e.details()}")


class ApiClient:
    def __init__(
        self,
        endpoints: list[str],
        timeout: float = 10.0,
        retry_for: float = 15.0,
        user_agent: str = "raftkube-client",
        credentials: ClientCredentials = INSECURE,
    ):
        if not endpoints:
            raise ValueError("at least one master endpoint is needed")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        # How long to keep trying masters before giving up on a call.
        self.retry_for = retry_for
        self.user_agent = user_agent
        self.credentials = credentials
        self._grpc_credentials = credentials.grpc()
        self._current = 0
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def endpoint(self) -> str:
        """The master requests go to now."""
        return self.endpoints[self._current]

    def _stub(self, endpoint: str) -> resources_pb2_grpc.ResourcesStub:
        channel = self._channels.get(endpoint)
        if channel is None:
            options = [*CHANNEL_OPTIONS, ("grpc.primary_user_agent", self.user_agent)]
            channel = self._channels[endpoint] = open_channel(endpoint, self._grpc_credentials, options)
        return resources_pb2_grpc.ResourcesStub(channel)

    def move_on(self, failed: str) -> None:
        """Send further requests to the next master, if `failed` is still the current one."""
        if self.endpoints[self._current] == failed:
            self._current = (self._current + 1) % len(self.endpoints)

    async def _retrying(self, call: Callable[[resources_pb2_grpc.ResourcesStub], Awaitable[T]], idempotent: bool) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for
        attempt = 0
        while True:
            endpoint = self.endpoint
            try:
                return await call(self._stub(endpoint))
            except grpc.RpcError as e:
                api_error = from_rpc_error(e)
                if api_error is not None:
                    # The master answered. 503: it did not commit (no
                    # leader, lost leadership): safe to try again anywhere.
                    if api_error.code != 503 or loop.time() > deadline:
                        raise api_error from None
                elif (
                    not (e.code() == grpc.StatusCode.UNAVAILABLE and (idempotent or never_reached_store(e)))
                    or loop.time() > deadline
                ):
                    raise _transport_error(e) from None
                self.move_on(endpoint)
                attempt += 1
                if attempt % len(self.endpoints) == 0:
                    await asyncio.sleep(min(0.05 * attempt, 0.5))

    async def _object(self, method: str, request: Any, idempotent: bool) -> Object:
        async def call(stub: resources_pb2_grpc.ResourcesStub) -> pb.ObjectResponse:
            response: pb.ObjectResponse = await getattr(stub, method)(request, timeout=self.timeout)
            return response

        response = await self._retrying(call, idempotent)
        result: Object = codec.loads(response.object)
        return result

    # -- CRUD -------------------------------------------------------------------------------

    async def get(self, r: Resource, name: str, namespace: str = "", resource_version: str = "") -> Object:
        request = pb.GetRequest(ref=_ref(r, namespace, name), resource_version=resource_version)
        return await self._object("Get", request, True)

    async def list(
        self,
        r: Resource,
        namespace: str = "",
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str = "",
        resource_version: str = "",
        resource_version_match: str = "",
    ) -> Object:
        """One page, as a Kubernetes list: {"metadata": {"resourceVersion", "continue"}, "items": [...]}."""
        request = pb.ListRequest(
            ref=_ref(r, namespace),
            label_selector=label_selector,
            field_selector=field_selector,
            limit=limit,
            resource_version=resource_version,
            resource_version_match=resource_version_match,
            **{"continue": continue_token},
        )

        async def call(stub: resources_pb2_grpc.ResourcesStub) -> pb.ListResponse:
            response: pb.ListResponse = await stub.List(request, timeout=self.timeout)
            return response

        response = await self._retrying(call, True)
        meta = {"resourceVersion": response.resource_version}
        if getattr(response, "continue"):
            meta["continue"] = getattr(response, "continue")
        return {"metadata": meta, "items": codec.loads_all(response.items)}

    async def list_all(self, r: Resource, namespace: str = "", page: int = 500, **selectors: str) -> Object:
        """Every page of a list, read at one revision."""
        result = await self.list(r, namespace, limit=page, **selectors)
        items = result["items"]
        while result["metadata"].get("continue"):
            result = await self.list(r, namespace, limit=page, continue_token=result["metadata"]["continue"])
            items.extend(result["items"])
        return {"metadata": {"resourceVersion": result["metadata"]["resourceVersion"]}, "items": items}

    async def create(self, r: Resource, obj: Object, namespace: str = "", field_manager: str = "") -> Object:
        namespace = namespace or (obj.get("metadata") or {}).get("namespace", "")
        request = pb.CreateRequest(ref=_ref(r, namespace), object=_dumps(obj), field_manager=field_manager)
        return await self._object("Create", request, False)

    async def update(self, r: Resource, obj: Object, subresource: str = "", field_manager: str = "") -> Object:
        """PUT: obj's metadata.resourceVersion, when set, must be current."""
        meta = obj.get("metadata") or {}
        request = pb.UpdateRequest(
            ref=_ref(r, meta.get("namespace", ""), meta.get("name", ""), subresource),
            object=_dumps(obj),
            field_manager=field_manager,
        )
        return await self._object("Update", request, False)

    async def update_status(self, r: Resource, obj: Object, field_manager: str = "") -> Object:
        return await self.update(r, obj, "status", field_manager)

    async def patch(
        self,
        r: Resource,
        name: str,
        patch: Any,
        namespace: str = "",
        patch_type: str = "merge",
        subresource: str = "",
        field_manager: str = "",
        force: bool = False,
    ) -> Object:
        """patch_type: "merge", "json", "strategic" or "apply" (server-side apply)."""
        request = pb.PatchRequest(
            ref=_ref(r, namespace, name, subresource),
            type=PATCH_TYPES[patch_type],
            patch=_dumps(patch),
            field_manager=field_manager,
            force=force,
        )
        return await self._object("Patch", request, False)

    async def apply(self, r: Resource, obj: Object, field_manager: str, force: bool = False) -> Object:
        meta = obj.get("metadata") or {}
        return await self.patch(
            r, meta["name"], obj, meta.get("namespace", ""), "apply", field_manager=field_manager, force=force
        )

    async def delete(
        self,
        r: Resource,
        name: str,
        namespace: str = "",
        grace_period_seconds: int | None = None,
        propagation_policy: str = "",
        precondition_uid: str = "",
        precondition_resource_version: str = "",
    ) -> Object:
        """The Status of a deletion, or the object while it is being deleted
        (graceful deletion, finalizers)."""
        options = pb.DeleteOptions(
            propagation_policy=propagation_policy,
            precondition_uid=precondition_uid,
            precondition_resource_version=precondition_resource_version,
        )
        if grace_period_seconds is not None:
            options.grace_period_seconds = grace_period_seconds
        return await self._object("Delete", pb.DeleteRequest(ref=_ref(r, namespace, name), options=options), False)

    async def create_subresource(
        self, r: Resource, name: str, subresource: str, obj: Object, namespace: str = ""
    ) -> Object:
        """POST to a subresource: pods/binding, pods/eviction, serviceaccounts/token."""
        request = pb.CreateRequest(ref=_ref(r, namespace, name, subresource), object=_dumps(obj))
        return await self._object("Create", request, False)

    async def bind(self, namespace: str, pod: str, node: str) -> Object:
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod}, "target": {"name": node}}
        return await self.create_subresource(resource("pods"), pod, "binding", binding, namespace)

    # -- watch ------------------------------------------------------------------------------

    async def watch(
        self,
        r: Resource,
        namespace: str = "",
        resource_version: str = "",
        label_selector: str = "",
        field_selector: str = "",
        name: str = "",
        allow_bookmarks: bool = True,
        timeout_seconds: float = 0,
    ) -> AsyncGenerator[Object, None]:
        """Events ({"type", "object"}) from one master. The stream ends
        with an ApiError when that master goes away (503) or the revision
        was compacted (410, an ERROR event as Kubernetes sends it, raised
        here); a caller re-watches from the last resourceVersion it saw,
        and this client starts the next watch on another master."""
        request = pb.WatchRequest(
            ref=_ref(r, namespace, name),
            label_selector=label_selector,
            field_selector=field_selector,
            resource_version=resource_version,
            allow_bookmarks=allow_bookmarks,
            timeout_seconds=timeout_seconds,
        )
        endpoint = self.endpoint
        call = self._stub(endpoint).Watch(request)
        try:
            async for event in call:
                obj = codec.loads(event.object)
                if event.type == pb.EVENT_TYPE_ERROR:
                    raise from_status(obj)
                yield {"type": EVENT_NAMES[event.type], "object": obj}
        except grpc.RpcError as e:
            api_error = from_rpc_error(e)
            if api_error is not None:
                raise api_error from None
            self.move_on(endpoint)
            raise _transport_error(e) from None
        finally:
            call.cancel()
