"""The masters' side of the node-agent protocol (proto/control_plane/nodepb):
registration, heartbeats that renew the node's Lease, the node's pods as a
watch, pod status and stop confirmations.

Every call is made as the node its client certificate names, through the
same pipeline as any API request (authentication, the Node authorizer and
RBAC, NodeRestriction, audit) and the same service layer, so an agent can
do over this protocol exactly what it could do over REST, no more.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from control_plane.apis import codec, errors
from control_plane.apis.errors import ApiError
from control_plane.apis.resources import REGISTRY
from control_plane.apiserver.access import Access
from control_plane.apiserver.grpc_service import abort
from control_plane.apiserver.service import ApiService, DeleteOptions, ListOptions
from control_plane.nodepb import node_pb2 as pb
from control_plane.nodepb import node_pb2_grpc
from control_plane.security.audit import AuditEvent
from control_plane.security.authz import Attributes
from control_plane.security.identity import UserInfo
from control_plane.security.node_authorizer import NODE_LEASE_NAMESPACE

log = logging.getLogger(__name__)
Object = dict[str, Any]

NODES = REGISTRY.lookup("", "v1", "nodes")
PODS = REGISTRY.lookup("", "v1", "pods")
LEASES = REGISTRY.lookup("coordination.k8s.io", "v1", "leases")
assert NODES is not None and PODS is not None and LEASES is not None
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Node"].full_name
EVENT_TYPES = {
    "ADDED": pb.EVENT_TYPE_ADDED,
    "MODIFIED": pb.EVENT_TYPE_MODIFIED,
    "DELETED": pb.EVENT_TYPE_DELETED,
    "BOOKMARK": pb.EVENT_TYPE_BOOKMARK,
    "ERROR": pb.EVENT_TYPE_ERROR,
}


def micro_time(now: datetime.datetime | None = None) -> str:
    """A Kubernetes MicroTime: RFC 3339 with microseconds."""
    return (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NodeService(node_pb2_grpc.NodeServicer):
    def __init__(self, service: ApiService, access: Access):
        self.service = service
        self.access = access

    # -- plumbing -----------------------------------------------------------------------

    async def _node(self, context: grpc.aio.ServicerContext) -> tuple[UserInfo, str]:
        """The caller and the node it is, or the call ends: only nodes speak this protocol."""
        try:
            user = await self.access.authenticate_grpc(context)
        except ApiError as e:
            await abort(context, e)
            raise
        if not user.node_name:
            await abort(
                context,
                ApiError(
                    403, "Forbidden", f'User "{user.name}" is not a node (want system:node:<name> in system:nodes)'
                ),
            )
        return user, user.node_name

    async def _check(self, context: grpc.aio.ServicerContext, attrs: Attributes, uri: str) -> AuditEvent | None:
        audit = self.access.begin_grpc_audit(attrs, lambda: uri, context, lambda: "raftkube-agent")
        try:
            self.access.authorize(attrs, audit)
        except ApiError as e:
            self.access.finish_audit(audit, e.code, status=e.status())
            await abort(context, e)
        return audit

    async def _run(self, context: grpc.aio.ServicerContext, audit: AuditEvent | None, call: Any) -> Any:
        try:
            result = await call
        except ApiError as e:
            self.access.finish_audit(audit, e.code, status=e.status())
            await abort(context, e)
            raise
        self.access.finish_audit(audit, 200)
        return result

    # -- methods --------------------------------------------------------------------------

    async def Register(self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext) -> pb.RegisterResponse:
        user, node = await self._node(context)
        attrs = Attributes(user, "create", resource="nodes", name=node)
        audit = await self._check(context, attrs, f"/api/v1/nodes/{node}")
        stored = await self._run(context, audit, self._register(user, node, request.node))
        return pb.RegisterResponse(node=codec.dumps(stored))

    async def _register(self, user: UserInfo, node: str, data: bytes) -> Object:
        assert NODES is not None
        wanted = _object(data)
        name = (wanted.get("metadata") or {}).get("name")
        if name != node:
            raise errors.bad_request(f"node {node!r} may register only itself, not {name!r}")
        try:
            return await self.service.create(NODES, "", codec.clone(wanted), user=user)
        except ApiError as e:
            if e.code != 409:
                raise
        # Registered before (a restarted agent): its labels, then its status.
        labels = (wanted.get("metadata") or {}).get("labels") or {}

        def relabel(current: Object) -> Object:
            current["metadata"].setdefault("labels", {}).update(labels)
            return current

        await self.service.guaranteed_update(NODES, "", node, relabel, user=user)

        def restate(current: Object) -> Object:
            current["status"] = wanted.get("status") or {}
            return current

        return await self.service.guaranteed_update(NODES, "", node, restate, "status", user=user)

    async def Heartbeat(
        self, request_iterator: AsyncIterator[pb.HeartbeatRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.HeartbeatResponse]:
        user, node = await self._node(context)
        attrs = Attributes(
            user,
            "update",
            api_group="coordination.k8s.io",
            resource="leases",
            namespace=NODE_LEASE_NAMESPACE,
            name=node,
        )
        uri = f"/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/leases/{node}"
        async for beat in request_iterator:
            audit = await self._check(context, attrs, uri)
            lease = await self._run(context, audit, self._renew(user, node, beat.lease_duration_seconds or 40))
            yield pb.HeartbeatResponse(lease=codec.dumps(lease))

    async def _renew(self, user: UserInfo, node: str, seconds: int) -> Object:
        assert LEASES is not None and NODES is not None
        now = micro_time()

        def renew(lease: Object) -> Object:
            spec = lease.setdefault("spec", {})
            spec.update(holderIdentity=node, leaseDurationSeconds=seconds, renewTime=now)
            return lease

        try:
            return await self.service.guaranteed_update(LEASES, NODE_LEASE_NAMESPACE, node, renew, user=user)
        except ApiError as e:
            if e.code != 404:
                raise
        owner = await self.service.read(NODES, "", node, fresh=True)
        lease: Object = {
            "metadata": {"name": node},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": seconds, "renewTime": now},
        }
        if owner is not None:  # the lease goes with its node, as Kubernetes links them
            lease["metadata"]["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Node", "name": node, "uid": owner["metadata"]["uid"]}
            ]
        try:
            return await self.service.create(LEASES, NODE_LEASE_NAMESPACE, lease, user=user)
        except ApiError as e:
            if e.code != 409:
                raise
            return await self.service.guaranteed_update(LEASES, NODE_LEASE_NAMESPACE, node, renew, user=user)

    async def WatchPods(
        self, request: pb.WatchPodsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PodEvent]:
        assert PODS is not None
        user, node = await self._node(context)
        selector = f"spec.nodeName={node}"
        attrs = Attributes(user, "watch", resource="pods", field_selector=selector)
        audit = await self._check(context, attrs, f"/api/v1/pods?watch=true&fieldSelector={selector}")
        self.access.audit_started(audit)
        opts = ListOptions(field_selector=selector, resource_version=request.resource_version)
        code = 200
        try:
            async for event in self.service.watch(PODS, "", opts, bookmarks=True):
                yield pb.PodEvent(type=EVENT_TYPES[event["type"]], object=codec.dumps(event["object"]))
        except ApiError as e:
            code = e.code
            yield pb.PodEvent(type=pb.EVENT_TYPE_ERROR, object=codec.dumps(e.status()))
        finally:
            self.access.finish_audit(audit, code)

    async def UpdatePodStatus(
        self, request: pb.UpdatePodStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdatePodStatusResponse:
        assert PODS is not None
        user, _ = await self._node(context)
        attrs = Attributes(user, "update", resource="pods", subresource="status", namespace=request.namespace,
                           name=request.name)  # fmt: skip
        audit = await self._check(context, attrs, f"/api/v1/namespaces/{request.namespace}/pods/{request.name}/status")
        try:
            status = _object(request.status)
        except ApiError as e:
            self.access.finish_audit(audit, e.code, status=e.status())
            await abort(context, e)
            raise

        def set_status(pod: Object) -> Object:
            if request.uid and pod["metadata"].get("uid") != request.uid:
                raise errors.conflict("", "pods", request.name, f"the pod's uid is not {request.uid}")
            pod["status"] = status
            return pod

        update = self.service.guaranteed_update(PODS, request.namespace, request.name, set_status, "status", user=user)
        pod = await self._run(context, audit, update)
        return pb.UpdatePodStatusResponse(pod=codec.dumps(pod))

    async def PodStopped(
        self, request: pb.PodStoppedRequest, context: grpc.aio.ServicerContext
    ) -> pb.PodStoppedResponse:
        assert PODS is not None
        user, _ = await self._node(context)
        attrs = Attributes(user, "delete", resource="pods", namespace=request.namespace, name=request.name)
        audit = await self._check(context, attrs, f"/api/v1/namespaces/{request.namespace}/pods/{request.name}")
        options = DeleteOptions(grace_period_seconds=0, preconditions={"uid": request.uid} if request.uid else None)
        await self._run(context, audit, self.service.delete(PODS, request.namespace, request.name, options, user=user))
        return pb.PodStoppedResponse()


def _object(data: bytes) -> Object:
    try:
        obj = codec.loads(data)
    except codec.DecodeError as e:
        raise errors.bad_request(f"the object could not be decoded: {e}") from None
    if not isinstance(obj, dict):
        raise errors.bad_request("the object must be a JSON object")
    return obj
