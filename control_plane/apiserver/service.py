"""The API server's service layer: Kubernetes semantics over the replicated
store. The REST and gRPC front ends are thin adapters over this class.

Storage: an object lives at /registry/<group/>plural/<namespace>/<name> as
JSON (metadata first) without its resourceVersion, which is the key's mod
revision; a list's resourceVersion is the store revision it was read at.
Every write is one store transaction guarded by the revision it was
computed from, so a stale write is a 409 Conflict and nothing is
half-written; a Service's allocations (allocators.py) ride in the same
transaction.

Reads: resourceVersion "" reads are linearizable (a read barrier); "0"
reads serve this master's applied state at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from control_plane.apis import codec, errors
from control_plane.apis.defaults import apply_defaults, prepare_for_create
from control_plane.apis.errors import ApiError, Cause
from control_plane.apis.resources import REGISTRY, Registry, Resource
from control_plane.apis.selectors import field_matcher, field_prefilter, label_matcher
from control_plane.apis.stamps import new_uid, now_rfc3339
from control_plane.apis.validation import validate
from control_plane.apiserver import allocators, managed_fields
from control_plane.apiserver.admission import CREATE, DELETE, UPDATE, AdmissionRequest, Chain
from control_plane.apiserver.admission.chain import standard_chain
from control_plane.apiserver.admission.service_account import ROOT_CA_CONFIGMAP
from control_plane.apiserver.managed_fields import Manager
from control_plane.apiserver.metrics import ApiMetrics
from control_plane.apiserver.object_keys import object_key, object_prefix
from control_plane.apiserver.patch import APPLY_PATCH, apply_patch
from control_plane.apiserver.stage_batches import StageBatcher
from control_plane.security import bootstrap_policy
from control_plane.security.identity import SYSTEM_USER, UserInfo
from control_plane.security.service_account_tokens import AUDIENCE, MAX_SECONDS, MIN_SECONDS, ServiceAccountTokens
from ha.errors import CommandFailed, ErrorCode, NotCommitted, OutcomeUnknown
from ha.keys import prefix_end
from ha.store import Store
from ha.storepb import kv_pb2

if TYPE_CHECKING:
    from control_plane.apiserver.admission.resource_quota import ResourceQuota
    from control_plane.apiserver.caches import ObjectCache
    from control_plane.apiserver.reviews import Reviews

Object = dict[str, Any]
# Resources computed on read (componentstatuses): plural -> lister.
VirtualLists = Mapping[str, Callable[[], Awaitable[list[Object]]]]
log = logging.getLogger(__name__)

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' alphabet: no vowels, no 0/1/3
# A write whose transaction lost only a race for an allocation or a quota
# charge (not for the object itself) is evaluated again, this many times.
WRITE_ATTEMPTS = 100


async def _backoff(attempt: int) -> None:
    """A short random pause before evaluating a write again, so writers
    racing for one quota on several masters spread out."""
    if attempt:
        await asyncio.sleep(random.uniform(0, 0.002 * min(attempt, 10)))


@dataclass
class ListOptions:
    label_selector: str = ""
    field_selector: str = ""
    limit: int = 0
    continue_token: str = ""
    resource_version: str = ""
    resource_version_match: str = ""


PROPAGATION_POLICIES = ("Foreground", "Background", "Orphan")


@dataclass
class DeleteOptions:
    grace_period_seconds: int | None = None
    propagation_policy: str | None = None
    preconditions: dict[str, Any] | None = None
    dry_run: bool = False

    @classmethod
    def parse(
        cls, grace: Any = None, policy: Any = None, preconditions: Any = None, dry_run: bool = False
    ) -> DeleteOptions:
        """Options as a client sent them (a DeleteOptions body, query
        parameters), checked: bad ones are a 400."""
        try:
            grace_value = int(grace) if grace is not None else None
        except (TypeError, ValueError):
            raise errors.bad_request("gracePeriodSeconds must be an integer") from None
        if policy is not None and policy not in PROPAGATION_POLICIES:
            supported = ", ".join(f'"{p}"' for p in PROPAGATION_POLICIES)
            raise errors.invalid(
                "DeleteOptions.meta.k8s.io",
                "",
                [
                    Cause(
                        "propagationPolicy",
                        f"Unsupported value: {json.dumps(policy)}: supported values: {supported}",
                        "FieldValueNotSupported",
                    )
                ],
                "meta.k8s.io",
            )
        if preconditions is not None and not isinstance(preconditions, dict):
            raise errors.bad_request("preconditions must be an object")
        return cls(grace_value, policy, preconditions or None, dry_run)


@dataclass
class RawList:
    revision: int
    continue_token: str
    items: list[bytes]  # each object's JSON, its resourceVersion included

    def metadata(self) -> Object:
        meta: Object = {"resourceVersion": str(self.revision)}
        if self.continue_token:
            meta["continue"] = self.continue_token
        return meta


@dataclass
class NewObject:
    """A create on its way through the stages before its write."""

    resource: Resource
    namespace: str
    obj: Object
    dry_run: bool
    manager: Manager | None
    user: UserInfo
    now: str = ""
    review: AdmissionRequest | None = None


class ApiService:
    def __init__(
        self,
        store: Store,
        registry: Registry = REGISTRY,
        clock: Callable[[], float] = time.time,
        metrics: ApiMetrics | None = None,
    ):
        self.store = store
        self.metrics = metrics
        self.registry = registry
        self.clock = clock
        # The API server's informer caches (caches.py), which admission
        # reads first, as kube-apiserver's plugins read their listers; None
        # reads the store each time.
        self.cache: ObjectCache | None = None
        # Answers to SelfSubjectAccessReviews and the like (reviews.py), and
        # the service-account token signer: set by the master that has them.
        self.reviews: Reviews | None = None
        self.tokens: ServiceAccountTokens | None = None
        # The cluster CA certificate (PEM), published in every namespace.
        self.root_ca_pem = ""
        self.admission: Chain
        self.quota: ResourceQuota
        self.admission, self.quota = standard_chain(self, self._store_txn, self.encode)
        self._new_objects: StageBatcher[NewObject] = StageBatcher(
            [
                self._complete_new,
                self._default_new,
                self._record_new_fields,
                self._admit_new,
                self._prepare_new,
                self._validate_new,
            ],
            observe_size=metrics.create_batches.observe if metrics is not None else None,
        )

    def now(self) -> str:
        return now_rfc3339(self.clock)

    # -- keys and encoding -----------------------------------------------------

    key = staticmethod(object_key)
    prefix = staticmethod(object_prefix)

    @staticmethod
    def decode(kv: kv_pb2.KeyValue) -> Object:
        obj: Object = codec.loads(kv.value)
        obj.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
        return obj

    @staticmethod
    def encode(obj: Object) -> bytes:
        # metadata first: a read can then splice the resourceVersion in
        # without parsing the object (with_resource_version).
        meta = obj.get("metadata") or {}
        if "resourceVersion" in meta:
            meta = {k: v for k, v in meta.items() if k != "resourceVersion"}
        stored = {"metadata": meta, **{k: v for k, v in obj.items() if k != "metadata"}}
        return codec.dumps(stored)

    # -- store access with errors mapped ----------------------------------------

    async def _call(self, fn: Awaitable[Any], operation: str) -> Any:
        started = time.perf_counter()
        try:
            return await fn
        except CommandFailed as e:
            if e.code == ErrorCode.COMPACTED:
                raise errors.gone(f"too old resource version: {e.message}") from None
            if e.code == ErrorCode.VALUE_TOO_LARGE:
                raise ApiError(413, "RequestEntityTooLarge", f"Request entity too large: {e.message}") from None
            if e.code in (ErrorCode.INVALID_ARGUMENT, ErrorCode.KEY_TOO_LARGE):
                raise errors.bad_request(e.message) from None
            raise errors.internal(e.message) from None
        except NotCommitted as e:
            # Never applied (no leader, or it changed before the commit):
            # safe to send again, and client-go does so on Retry-After.
            raise errors.unavailable(f"the write was not committed, retry: {e}", retry_after=1) from None
        except OutcomeUnknown as e:
            raise errors.timeout(f"the outcome of the write is unknown: {e}") from None
        finally:
            if self.metrics is not None:
                self.metrics.observe_store(operation, time.perf_counter() - started)

    async def _range_one(self, key: bytes, resource_version: str = "") -> kv_pb2.KeyValue | None:
        req = kv_pb2.RangeRequest(key=key, serializable=resource_version == "0")
        resp = await self._call(self.store.range(req), "get")
        return resp.kvs[0] if resp.kvs else None

    async def _store_txn(self, txn: kv_pb2.TxnRequest) -> kv_pb2.TxnResponse:
        resp: kv_pb2.TxnResponse = await self._call(self.store.txn(txn), "update")
        return resp

    # -- reads for admission (admission.Reader) ----------------------------------

    async def read(self, resource: Resource, namespace: str, name: str, fresh: bool = False) -> Object | None:
        """An object from the caches, or as this master has applied it
        (None: there is none)."""
        if not fresh and self.cache is not None:
            cached = self.cache.get(resource, namespace, name)
            if cached is not None:
                return cached
        kv = await self._range_one(self.key(resource, namespace, name), "0")
        return self.decode(kv) if kv is not None else None

    async def read_all(
        self, resource: Resource, namespace: str, revision: int = 0, fresh: bool = False
    ) -> tuple[int, list[Object]]:
        """Every object of a resource in a namespace, from the caches or as
        this master has applied them (or at a past revision), and the
        revision they reflect."""
        if not fresh and not revision and self.cache is not None:
            cached = self.cache.list(resource, namespace)
            if cached is not None:
                return cached
        prefix = self.prefix(resource, namespace)
        req = kv_pb2.RangeRequest(key=prefix, range_end=prefix_end(prefix), revision=revision, serializable=True)
        resp = await self._call(self.store.range(req), "list")
        return resp.header.revision, [self.decode(kv) for kv in resp.kvs]

    # -- checks ------------------------------------------------------------------

    def _check(self, resource: Resource, obj: Object, name: str) -> None:
        causes = validate(resource, obj)
        if causes:
            raise errors.invalid(resource.kind, name, causes, resource.group)

    async def _allocate(self, resource: Resource, obj: Object, current: Object | None) -> None:
        """Cluster IPs and node ports for a Service (see allocators)."""
        if resource.plural != "services" or not isinstance(obj.get("spec"), dict):
            return
        old_spec = (current or {}).get("spec") if current else None

        async def taken(key: bytes) -> bool:
            return await self._range_one(key, "0") is not None

        causes = await allocators.allocate(obj["spec"], old_spec, taken)
        if causes:
            raise errors.invalid(resource.kind, (obj.get("metadata") or {}).get("name", ""), causes, resource.group)

    def _check_body_identity(self, resource: Resource, obj: Object, namespace: str, name: str | None) -> None:
        kind = obj.get("kind")
        api_version = obj.get("apiVersion")
        if kind and kind != resource.kind:
            raise errors.bad_request(f"the kind of the object ({kind}) does not match the URL ({resource.kind})")
        if api_version and api_version != resource.api_version:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({resource.api_version})"
            )
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if resource.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
        if name is not None and meta.get("name") and meta["name"] != name:
            raise errors.bad_request("the name of the object does not match the name on the URL")

    # -- create -----------------------------------------------------------------

    async def create(
        self,
        resource: Resource,
        namespace: str,
        obj: Object,
        dry_run: bool = False,
        manager: Manager | None = None,
        *,
        user: UserInfo = SYSTEM_USER,
    ) -> Object:
        created, _ = await self._create(resource, namespace, obj, dry_run, manager, user)
        return created

    async def create_json(
        self,
        resource: Resource,
        namespace: str,
        obj: Object,
        dry_run: bool = False,
        manager: Manager | None = None,
        *,
        user: UserInfo = SYSTEM_USER,
    ) -> bytes:
        """create(), answered as JSON (what the front ends send back): the
        bytes just stored, with the resourceVersion spliced in, rather than
        the object encoded a second time."""
        created, stored = await self._create(resource, namespace, obj, dry_run, manager, user)
        return stored if stored is not None else codec.dumps(created)

    async def _create(
        self,
        resource: Resource,
        namespace: str,
        obj: Object,
        dry_run: bool,
        manager: Manager | None,
        user: UserInfo,
    ) -> tuple[Object, bytes | None]:
        """The object created, and its JSON as stored with its
        resourceVersion when that is the object (None: encode it)."""
        if resource.virtual:
            raise errors.method_not_allowed(f"{resource.plural} cannot be created")
        if not isinstance(obj, dict):
            raise errors.bad_request("the body must be a JSON object")
        if resource.review:
            if self.reviews is None:
                raise errors.method_not_allowed(f"{resource.plural} are not served by this API server")
            self._check_body_identity(resource, obj, namespace, None)
            return await self.reviews.create(resource, namespace, obj, user), None
        # The object is the caller's to give: it is completed and stored as
        # it is (the front ends pass what they just parsed), not copied.
        new = NewObject(resource, namespace, obj, dry_run, manager, user)
        await self._new_objects.run(new)
        with self._new_objects.outstanding():
            return await self._store_new(new)

    # Stages of a create before its write, run in batches (stage_batches.py).

    def _complete_new(self, new: NewObject) -> None:
        resource, obj = new.resource, new.obj
        self._check_body_identity(resource, obj, new.namespace, None)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise errors.invalid(
                resource.kind,
                meta.get("name", ""),
                [Cause("metadata.resourceVersion", "Invalid value: must be empty on create")],
            )
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(secrets.choice(GENERATE_ALPHABET) for _ in range(5))
        obj["apiVersion"], obj["kind"] = resource.api_version, resource.kind
        if resource.namespaced:
            meta["namespace"] = new.namespace
        else:
            meta.pop("namespace", None)
        meta.pop("managedFields", None)  # the server keeps them
        new.now = self.now()
        if new.manager is not None and new.manager.operation == "Apply":
            meta["managedFields"] = managed_fields.created_by_apply(obj, new.manager, resource.api_version, new.now)

    @staticmethod
    def _default_new(new: NewObject) -> None:
        apply_defaults(new.resource.plural, new.obj)

    @staticmethod
    def _record_new_fields(new: NewObject) -> None:
        # Fields are the client's as it sent them (and their defaults), not
        # what admission adds, as Kubernetes records them.
        if new.manager is not None and new.manager.operation != "Apply":
            new.obj["metadata"]["managedFields"] = managed_fields.record_update(
                None, new.obj, new.manager, new.resource.api_version, new.now
            )

    def _admit_new(self, new: NewObject) -> Awaitable[None]:
        name = str(new.obj["metadata"].get("name") or "")
        new.review = AdmissionRequest(
            CREATE, new.resource, new.namespace, name, new.obj, None, new.user, "", new.dry_run
        )
        return self.admission.admit(new.review)

    @staticmethod
    def _prepare_new(new: NewObject) -> None:
        prepare_for_create(new.resource.plural, new.obj)

    def _validate_new(self, new: NewObject) -> None:
        meta = new.obj["metadata"]
        self._check(new.resource, new.obj, meta.get("name", ""))
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = new.now
        for transient in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(transient, None)
        if new.resource.has_spec:
            meta["generation"] = 1

    async def _store_new(self, new: NewObject) -> tuple[Object, bytes | None]:
        """A create's write, once it went through the stages above:
        validating admission and the store transaction, evaluated again
        when it lost a race for an allocation or a quota charge."""
        resource, namespace, obj, review, dry_run = new.resource, new.namespace, new.obj, new.review, new.dry_run
        assert review is not None  # set by _admit_new
        meta = obj["metadata"]
        key = self.key(resource, namespace, meta["name"])
        as_sent = codec.clone(obj.get("spec")) if resource.plural == "services" else None
        for attempt in range(WRITE_ATTEMPTS):
            async with contextlib.AsyncExitStack() as held:
                review.stack, review.attempt = held, attempt
                review.reset_store_ops()
                await self.admission.validate(review)
                await self._allocate(resource, obj, None)
                if dry_run:
                    return obj, None
                compares, ops = _allocation_ops(resource, None, obj)
                compares += review.compares
                stored = self.encode(obj)
                txn = kv_pb2.TxnRequest(
                    compare=[kv_pb2.Compare(key=key, target=kv_pb2.Compare.CREATE, create_revision=0), *compares],
                    success=[
                        kv_pb2.RequestOp(request_put=kv_pb2.PutRequest(key=key, value=stored)),
                        *ops,
                        *review.ops,
                    ],
                )
                resp = await self._call(self.store.txn(txn), "create")
            if resp.succeeded:
                revision = resp.header.revision
                meta["resourceVersion"] = str(revision)
                if resource.plural == "namespaces":
                    await self._namespace_defaults(meta["name"])
                if resource.plural == "resourcequotas":
                    return await self.quota.recount(namespace, meta["name"]) or obj, None
                return obj, with_resource_version(stored, revision)
            if not compares or await self._range_one(key, "0") is not None:
                raise errors.already_exists(resource.group, resource.plural, meta["name"])
            # Another master took an allocation this one picked, or charged a
            # quota this write charges: evaluate again.
            if as_sent is not None:
                obj["spec"] = codec.clone(as_sent)
            await _backoff(attempt)
        raise errors.conflict(resource.group, resource.plural, meta["name"], "too many concurrent changes; try again")

    # -- read -------------------------------------------------------------------

    async def get(self, resource: Resource, namespace: str, name: str, resource_version: str = "") -> Object:
        if resource.virtual:
            raise errors.not_found(resource.group, resource.plural, name)
        kv = await self._range_one(self.key(resource, namespace, name), resource_version)
        if kv is None:
            raise errors.not_found(resource.group, resource.plural, name)
        return self.decode(kv)

    async def list(self, resource: Resource, namespace: str, opts: ListOptions) -> Object:
        raw = await self.list_raw(resource, namespace, opts)
        result: Object = {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": raw.metadata(),
            "items": [codec.loads(item) for item in raw.items],
        }
        return result

    async def list_raw(self, resource: Resource, namespace: str, opts: ListOptions) -> RawList:
        """A list page with its objects as the JSON bytes a response
        carries: nothing is parsed unless selectors need it."""
        labels = label_matcher(opts.label_selector)
        fields = field_matcher(opts.field_selector)
        select_all = not opts.label_selector.strip() and not opts.field_selector.strip()
        prefix = self.prefix(resource, namespace)
        end = prefix_end(prefix)
        revision = 0
        start = prefix
        if opts.continue_token:
            revision, start = _decode_continue(opts.continue_token, prefix)
        elif opts.resource_version not in ("", "0"):
            revision = await self._resolve_revision(opts)
        items: list[bytes] = []
        more = False
        next_start = b""
        page = max(opts.limit, 500) if opts.limit else 0
        serializable = opts.resource_version == "0" and not opts.continue_token
        while True:
            req = kv_pb2.RangeRequest(
                key=start, range_end=end, revision=revision, limit=page, serializable=serializable
            )
            resp = await self._call(self.store.range(req), "list")
            if revision == 0:
                revision = resp.header.revision  # every further page reads this revision
            for i, kv in enumerate(resp.kvs):
                if select_all:
                    items.append(with_resource_version(kv.value, kv.mod_revision))
                else:
                    obj = self.decode(kv)
                    if labels(obj) and fields(obj):
                        items.append(codec.dumps(obj))
                if opts.limit and len(items) >= opts.limit:
                    rest = i + 1 < len(resp.kvs) or resp.more
                    if rest:
                        more, next_start = True, kv.key + b"\0"
                    break
            else:
                if resp.more and resp.kvs:
                    start = resp.kvs[-1].key + b"\0"
                    continue
            break
        return RawList(revision, _encode_continue(revision, next_start, prefix) if more else "", items)

    async def _resolve_revision(self, opts: ListOptions) -> int:
        try:
            wanted = int(opts.resource_version)
        except ValueError:
            raise errors.bad_request(f"invalid resourceVersion {opts.resource_version!r}") from None
        if opts.resource_version_match == "Exact":
            return wanted
        # NotOlderThan: any revision at or after `wanted`; the current one is.
        current = await self._call(self.store.range(kv_pb2.RangeRequest(key=b"/", count_only=True)), "count")
        if current.header.revision < wanted:
            raise errors.timeout(f"Too large resource version: {wanted}, current: {current.header.revision}")
        return 0

    # -- update -----------------------------------------------------------------

    async def update(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        obj: Object,
        subresource: str = "",
        dry_run: bool = False,
        manager: Manager | None = None,
        *,
        user: UserInfo = SYSTEM_USER,
    ) -> Object:
        if not isinstance(obj, dict):
            raise errors.bad_request("the body must be a JSON object")
        self._check_body_identity(resource, obj, namespace, name)
        key = self.key(resource, namespace, name)
        kv = await self._range_one(key)
        if kv is None:
            raise errors.not_found(resource.group, resource.plural, name)
        current = self.decode(kv)
        wanted_rv = (obj.get("metadata") or {}).get("resourceVersion")
        if wanted_rv and wanted_rv != str(kv.mod_revision):
            raise errors.modified(resource.group, resource.plural, name)
        updated = self._merge_update(resource, current, codec.clone(obj), subresource)
        return await self._write(
            resource,
            namespace,
            name,
            current,
            updated,
            kv.mod_revision,
            dry_run,
            manager,
            user=user,
            subresource=subresource,
        )

    def _merge_update(self, resource: Resource, current: Object, new: Object, subresource: str) -> Object:
        """The object an update stores: what the client may change, over
        what it may not (identity, system metadata, the other half of
        spec/status)."""
        if subresource == "status":
            merged = codec.clone(current)
            merged["status"] = new.get("status", {})
            return merged
        if subresource == "finalize":  # namespaces: the namespace controller's part
            merged = codec.clone(current)
            merged.setdefault("spec", {})["finalizers"] = list((new.get("spec") or {}).get("finalizers") or [])
            return merged
        new["apiVersion"], new["kind"] = resource.api_version, resource.kind
        meta = new.setdefault("metadata", {})
        old_meta = current.get("metadata") or {}
        for fixed in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
        ):
            if fixed in old_meta:
                meta[fixed] = old_meta[fixed]
            else:
                meta.pop(fixed, None)
        if resource.status_subresource:
            if "status" in current:
                new["status"] = current["status"]
            else:
                new.pop("status", None)
        if resource.plural == "namespaces":  # spec.finalizers change only through /finalize
            finalizers = (current.get("spec") or {}).get("finalizers")
            new.setdefault("spec", {})["finalizers"] = list(finalizers or [])
        apply_defaults(resource.plural, new)
        return new

    async def _write(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        current: Object,
        updated: Object,
        revision: int,
        dry_run: bool = False,
        manager: Manager | None = None,
        *,
        user: UserInfo = SYSTEM_USER,
        subresource: str = "",
    ) -> Object:
        """Store `updated` over `current` (read at `revision`): validation,
        admission, generation, field ownership, and the end of a deletion
        whose finalizers are gone. A 409 when the object changed since
        `revision`."""
        meta = updated.setdefault("metadata", {})
        old_meta = current.get("metadata") or {}
        self._check(resource, updated, name)
        if manager is not None:
            meta["managedFields"] = managed_fields.record_update(
                current, updated, manager, resource.api_version, self.now()
            )
        if resource.has_spec:
            generation = int(old_meta.get("generation") or 1)
            if _spec_of(updated) != _spec_of(current):
                generation += 1
            meta["generation"] = generation
        meta.pop("resourceVersion", None)
        key = self.key(resource, namespace, name)
        finished = bool(meta.get("deletionTimestamp")) and not meta.get("finalizers") and not _held(resource, updated)
        review = AdmissionRequest(
            DELETE if finished else UPDATE, resource, namespace, name, updated, current, user, subresource, dry_run
        )
        for attempt in range(WRITE_ATTEMPTS):
            async with contextlib.AsyncExitStack() as held:
                review.stack, review.attempt = held, attempt
                review.reset_store_ops()
                await self.admission.validate(review)
                if dry_run:
                    meta["resourceVersion"] = str(revision)
                    return updated
                guard = [kv_pb2.Compare(key=key, target=kv_pb2.Compare.MOD, mod_revision=revision)]
                if finished:
                    op = kv_pb2.RequestOp(request_delete_range=kv_pb2.DeleteRangeRequest(key=key))
                else:
                    await self._allocate(resource, updated, current)
                    op = kv_pb2.RequestOp(request_put=kv_pb2.PutRequest(key=key, value=self.encode(updated)))
                compares, ops = _allocation_ops(resource, current, None if finished else updated)
                txn = kv_pb2.TxnRequest(compare=[*guard, *compares, *review.compares], success=[op, *ops, *review.ops])
                resp = await self._call(self.store.txn(txn), "update")
            if resp.succeeded:
                meta["resourceVersion"] = str(resp.header.revision)
                if resource.plural == "resourcequotas" and not finished:
                    return await self.quota.recount(namespace, name) or updated
                return updated
            now = await self._range_one(key, "0")
            if now is None or now.mod_revision != revision or not (compares or review.compares):
                raise errors.modified(resource.group, resource.plural, name)
            await _backoff(attempt)  # only a quota or an allocation raced: again
        raise errors.conflict(resource.group, resource.plural, name, "too many concurrent changes; try again")

    async def guaranteed_update(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        mutate: Callable[[Object], Object],
        subresource: str = "",
        dry_run: bool = False,
        attempts: int = 5,
        manager: Manager | None = None,
        *,
        user: UserInfo = SYSTEM_USER,
    ) -> Object:
        """Read, mutate, write; on a concurrent change, again (patches)."""
        for attempt in range(attempts):
            key = self.key(resource, namespace, name)
            kv = await self._range_one(key)
            if kv is None:
                raise errors.not_found(resource.group, resource.plural, name)
            current = self.decode(kv)
            wanted = mutate(codec.clone(current))
            wanted_rv = (wanted.get("metadata") or {}).get("resourceVersion")
            if wanted_rv and wanted_rv != str(kv.mod_revision):
                raise errors.modified(resource.group, resource.plural, name)
            self._check_body_identity(resource, wanted, namespace, name)
            updated = self._merge_update(resource, current, wanted, subresource)
            try:
                return await self._write(
                    resource,
                    namespace,
                    name,
                    current,
                    updated,
                    kv.mod_revision,
                    dry_run,
                    manager,
                    user=user,
                    subresource=subresource,
                )
            except ApiError as e:
                if e.code != 409 or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    # -- patch and apply ----------------------------------------------------------

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch_type: str,
        patch: Any,
        subresource: str = "",
        dry_run: bool = False,
        field_manager: str = "",
        force: bool = False,
        *,
        user: UserInfo = SYSTEM_USER,
    ) -> Object:
        """A merge, JSON, strategic merge or apply patch (by media type)."""
        if patch_type.split(";")[0].strip() == APPLY_PATCH:
            if subresource not in ("", "status"):
                raise errors.unsupported_media_type(patch_type)
            return await self.apply(
                resource, namespace, name, patch, field_manager, force, subresource, dry_run, user=user
            )
        manager = Manager(field_manager, "Update", subresource) if field_manager else None

        def mutate(obj: Object) -> Object:
            if subresource == "scale":
                patched = apply_patch(patch_type, scale_of(obj), patch)
                obj.setdefault("spec", {})["replicas"] = (patched.get("spec") or {}).get("replicas")
                return obj
            # A patch that sets resourceVersion makes the write conditional on it.
            return apply_patch(patch_type, obj, patch)

        stored_sub = "status" if subresource == "status" else ""
        obj = await self.guaranteed_update(
            resource, namespace, name, mutate, stored_sub, dry_run, manager=manager, user=user
        )
        return scale_of(obj) if subresource == "scale" else obj

    async def apply(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        config: Any,
        field_manager: str,
        force: bool = False,
        subresource: str = "",
        dry_run: bool = False,
        *,
        user: UserInfo = SYSTEM_USER,
    ) -> Object:
        """Server-side apply: create the object from `config`, or merge it
        in with field ownership (409 on another manager's fields)."""
        if not field_manager:
            raise errors.bad_request("PATCH requests with the apply content type need a fieldManager")
        if not isinstance(config, dict):
            raise errors.bad_request("the applied configuration must be an object")
        if not config.get("apiVersion") or not config.get("kind"):
            raise errors.bad_request("the applied configuration must set apiVersion and kind")
        self._check_body_identity(resource, config, namespace, name)
        config = codec.clone(config)
        config["metadata"]["name"] = name
        wanted_rv = config["metadata"].pop("resourceVersion", None)
        manager = Manager(field_manager, "Apply", subresource)
        key = self.key(resource, namespace, name)
        for attempt in range(5):
            kv = await self._range_one(key)
            if kv is None:
                if subresource or wanted_rv:
                    raise errors.not_found(resource.group, resource.plural, name)
                try:
                    return await self.create(resource, namespace, config, dry_run, manager, user=user)
                except ApiError as e:
                    if e.reason != "AlreadyExists" or attempt == 4:
                        raise
                    continue
            current = self.decode(kv)
            if wanted_rv and wanted_rv != str(kv.mod_revision):
                raise errors.modified(resource.group, resource.plural, name)
            merged = managed_fields.apply(current, config, manager, force, resource.api_version, self.now())
            updated = self._merge_update(resource, current, merged, subresource)
            updated["metadata"]["managedFields"] = merged["metadata"]["managedFields"]
            try:
                return await self._write(
                    resource,
                    namespace,
                    name,
                    current,
                    updated,
                    kv.mod_revision,
                    dry_run,
                    user=user,
                    subresource=subresource,
                )
            except ApiError as e:
                if e.code != 409 or attempt == 4:
                    raise
        raise AssertionError("unreachable")

    # -- subresources: scale, binding, eviction ------------------------------------

    async def log_target(self, resource: Resource, namespace: str, name: str, container: str) -> tuple[str, str]:
        """Whose log a pods/log read wants: the container (the only one
        when none is named) and the node the pod runs on ("" before it is
        scheduled), with Kubernetes' answers for a container it lacks."""
        pod = await self.get(resource, namespace, name)
        spec = pod.get("spec") or {}
        containers = [str(c.get("name")) for c in spec.get("containers") or []]
        init = [str(c.get("name")) for c in spec.get("initContainers") or []]
        ephemeral = [str(c.get("name")) for c in spec.get("ephemeralContainers") or []]
        if not container:
            if len(containers) != 1:
                message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
                if init:
                    message += f" or one of the init containers: [{' '.join(init)}]"
                raise errors.bad_request(message)
            container = containers[0]
        elif container not in (*containers, *init, *ephemeral):
            raise errors.bad_request(f"container {container} is not valid for pod {name}")
        return container, str(spec.get("nodeName") or "")

    async def create_token(self, namespace: str, name: str, request: Object, dry_run: bool = False) -> Object:
        """serviceaccounts/token (TokenRequest): a signed token for the
        account, bound to a pod if the request names one."""
        if self.tokens is None:
            raise errors.unavailable("this API server has no service-account signing key")
        accounts = self.registry.lookup("", "v1", "serviceaccounts")
        assert accounts is not None
        account = await self.get(accounts, namespace, name)
        spec = dict(request.get("spec") or {}) if isinstance(request, dict) else {}
        seconds = spec.get("expirationSeconds", 3600)
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < MIN_SECONDS:
            raise errors.invalid(
                "TokenRequest",
                name,
                [Cause("spec.expirationSeconds", f"may not specify a duration less than {MIN_SECONDS} seconds")],
                "authentication.k8s.io",
            )
        seconds = min(seconds, MAX_SECONDS)
        audiences = [str(a) for a in spec.get("audiences") or [AUDIENCE]]
        pod: tuple[str, str] | None = None
        node: tuple[str, str] | None = None
        bound = spec.get("boundObjectRef")
        if bound:
            if not isinstance(bound, dict) or bound.get("kind") != "Pod":
                raise errors.invalid(
                    "TokenRequest",
                    name,
                    [Cause("spec.boundObjectRef.kind", "only Pod bound tokens are supported")],
                    "authentication.k8s.io",
                )
            pods = self.registry.lookup("", "v1", "pods")
            assert pods is not None
            bound_pod = await self.get(pods, namespace, str(bound.get("name") or ""))
            pod_meta, pod_spec = bound_pod["metadata"], bound_pod.get("spec") or {}
            if bound.get("uid") and bound["uid"] != pod_meta.get("uid"):
                raise errors.conflict(
                    "", "pods", pod_meta["name"], "the uid in boundObjectRef does not match the pod's"
                )
            if (pod_spec.get("serviceAccountName") or "default") != name:
                raise errors.bad_request(f"pod {pod_meta['name']} does not run as service account {name}")
            pod = (pod_meta["name"], pod_meta["uid"])
            if pod_spec.get("nodeName"):
                node = (pod_spec["nodeName"], "")
            spec["boundObjectRef"] = {**bound, "uid": pod_meta["uid"]}
        spec["expirationSeconds"], spec["audiences"] = seconds, audiences
        issued = self.tokens.issue(namespace, name, account["metadata"]["uid"], seconds, audiences, pod, node)
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
            "spec": spec,
            "status": {
                "token": "" if dry_run else issued.token,
                "expirationTimestamp": now_rfc3339(lambda: float(issued.expires_at)),
            },
        }

    async def get_scale(self, resource: Resource, namespace: str, name: str, resource_version: str = "") -> Object:
        return scale_of(await self.get(resource, namespace, name, resource_version))

    async def update_scale(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        scale: Object,
        dry_run: bool = False,
        field_manager: str = "",
        *,
        user: UserInfo = SYSTEM_USER,
    ) -> Object:
        replicas = (scale.get("spec") or {}).get("replicas") if isinstance(scale, dict) else None
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.invalid("Scale", name, [Cause("spec.replicas", "must be greater than or equal to 0")])
        wanted_rv = (scale.get("metadata") or {}).get("resourceVersion")

        def set_replicas(obj: Object) -> Object:
            if wanted_rv:
                obj["metadata"]["resourceVersion"] = wanted_rv
            obj.setdefault("spec", {})["replicas"] = replicas
            return obj

        manager = Manager(field_manager, "Update", "scale") if field_manager else None
        obj = await self.guaranteed_update(
            resource,
            namespace,
            name,
            set_replicas,
            dry_run=dry_run,
            attempts=1 if wanted_rv else 5,
            manager=manager,
            user=user,
        )
        return scale_of(obj)

    async def bind(
        self, resource: Resource, namespace: str, name: str, binding: Object, *, user: UserInfo = SYSTEM_USER
    ) -> Object:
        """pods/binding: assign an unassigned pod to a node, once."""
        node = ((binding.get("target") or {}) if isinstance(binding, dict) else {}).get("name")
        if not node:
            raise errors.invalid("Binding", name, [Cause("target.name", "Required value", "FieldValueRequired")])

        def assign(pod: Object) -> Object:
            spec = pod.setdefault("spec", {})
            if spec.get("nodeName"):
                raise errors.conflict("", "pods", name, f"pod {name} is already assigned to node {spec['nodeName']!r}")
            spec["nodeName"] = node
            return pod

        await self.guaranteed_update(resource, namespace, name, assign, user=user)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    async def evict(
        self, resource: Resource, namespace: str, name: str, opts: DeleteOptions, *, user: UserInfo = SYSTEM_USER
    ) -> Object:
        """pods/eviction: a delete that disruption budgets could refuse
        (there are none yet, so it is always allowed)."""
        await self.delete(resource, namespace, name, opts, user=user)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # -- delete -----------------------------------------------------------------

    async def delete(
        self, resource: Resource, namespace: str, name: str, opts: DeleteOptions, *, user: UserInfo = SYSTEM_USER
    ) -> Object:
        if resource.virtual:
            raise errors.method_not_allowed(f"{resource.plural} cannot be deleted")
        key = self.key(resource, namespace, name)
        for attempt in range(WRITE_ATTEMPTS):
            await _backoff(attempt)
            kv = await self._range_one(key)
            if kv is None:
                raise errors.not_found(resource.group, resource.plural, name)
            current = self.decode(kv)
            meta = current.get("metadata") or {}
            pre = opts.preconditions or {}
            if pre.get("uid") and pre["uid"] != meta.get("uid"):
                raise errors.conflict(
                    resource.group,
                    resource.plural,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}",
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != str(kv.mod_revision):
                raise errors.conflict(
                    resource.group,
                    resource.plural,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                    f"ResourceVersion in object meta: {kv.mod_revision}",
                )
            if resource.plural == "namespaces" and meta.get("deletionTimestamp") and _held(resource, current):
                raise errors.conflict(
                    "",
                    "namespaces",
                    name,
                    "The system is ensuring all content is removed from this namespace.  Upon completion, "
                    "this namespace will automatically be purged by the system.",
                )
            graceful = self._grace_period(resource, current, opts)
            finalizers = list(meta.get("finalizers") or [])
            if opts.propagation_policy == "Foreground" and "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
            elif opts.propagation_policy == "Orphan" and "orphan" not in finalizers:
                finalizers.append("orphan")
            # A namespace is never deleted at once: it terminates first.
            held = resource.plural == "namespaces" and _held(resource, current)
            if not finalizers and graceful is None and not held:
                review = AdmissionRequest(DELETE, resource, namespace, name, None, current, user, "", opts.dry_run)
                async with contextlib.AsyncExitStack() as admitted:
                    review.stack, review.attempt = admitted, attempt
                    await self.admission.validate(review)
                    if opts.dry_run:
                        return _success_status(resource, name, meta.get("uid", ""))
                    _, releases = _allocation_ops(resource, current, None)
                    txn = kv_pb2.TxnRequest(
                        compare=[
                            kv_pb2.Compare(key=key, target=kv_pb2.Compare.MOD, mod_revision=kv.mod_revision),
                            *review.compares,
                        ],
                        success=[
                            kv_pb2.RequestOp(request_delete_range=kv_pb2.DeleteRangeRequest(key=key)),
                            *releases,
                            *review.ops,
                        ],
                    )
                    resp = await self._call(self.store.txn(txn), "delete")
                if resp.succeeded:
                    return _success_status(resource, name, meta.get("uid", ""))
                continue
            # Graceful deletion, or finalizers to run: mark it, keep it.
            updated = codec.clone(current)
            umeta = updated["metadata"]
            if not umeta.get("deletionTimestamp"):
                umeta["deletionTimestamp"] = time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock() + (graceful or 0))
                )
                umeta["deletionGracePeriodSeconds"] = graceful or 0
            elif graceful is not None and graceful < int(umeta.get("deletionGracePeriodSeconds") or 0):
                umeta["deletionGracePeriodSeconds"] = graceful  # a shorter grace period wins
            if finalizers:
                umeta["finalizers"] = finalizers
            if resource.plural == "namespaces":
                updated.setdefault("status", {})["phase"] = "Terminating"
            try:
                return await self._write(
                    resource, namespace, name, current, updated, kv.mod_revision, opts.dry_run, user=user
                )
            except ApiError as e:
                if e.code != 409:
                    raise
        raise errors.conflict(resource.group, resource.plural, name, "too many concurrent changes; try again")

    @staticmethod
    def _grace_period(resource: Resource, obj: Object, opts: DeleteOptions) -> int | None:
        """Seconds a pod gets to stop on its node; None deletes at once."""
        if resource.plural != "pods":
            return None
        spec = obj.get("spec") or {}
        if not spec.get("nodeName"):
            return None  # never scheduled: nothing runs it, delete now
        grace = opts.grace_period_seconds
        if grace is None:
            grace = int(spec.get("terminationGracePeriodSeconds", 30))
        # Zero: the node confirmed the stop (or the user forced it).
        return None if grace <= 0 else grace

    async def delete_collection(
        self,
        resource: Resource,
        namespace: str,
        list_opts: ListOptions,
        opts: DeleteOptions,
        *,
        user: UserInfo = SYSTEM_USER,
    ) -> Object:
        listed = await self.list(resource, namespace, list_opts)
        for item in listed["items"]:
            meta = item["metadata"]
            try:
                await self.delete(resource, meta.get("namespace", ""), meta["name"], opts, user=user)
            except ApiError as e:
                if e.code != 404:
                    raise
        return listed

    @staticmethod
    def check_list_options(opts: ListOptions) -> None:
        """Raise the 400 a list or watch with these options would get."""
        label_matcher(opts.label_selector)
        field_matcher(opts.field_selector)
        if opts.resource_version not in ("", "0"):
            try:
                int(opts.resource_version)
            except ValueError:
                raise errors.bad_request(f"invalid resourceVersion {opts.resource_version!r}") from None

    # -- watch ------------------------------------------------------------------

    async def watch(
        self,
        resource: Resource,
        namespace: str,
        opts: ListOptions,
        bookmarks: bool = False,
        name: str = "",
    ) -> AsyncIterator[Object]:
        """Kubernetes watch events: ADDED / MODIFIED / DELETED / BOOKMARK /
        ERROR. From resourceVersion "" or "0" the current objects come
        first as ADDED; from N, every change after N."""
        labels = label_matcher(opts.label_selector)
        fields = field_matcher(opts.field_selector)
        may_match = field_prefilter(opts.field_selector)
        if name:
            fields_only = fields
            fields = lambda obj: fields_only(obj) and (obj.get("metadata") or {}).get("name") == name  # noqa: E731
        prefix = self.key(resource, namespace, name) if name else self.prefix(resource, namespace)
        end = b"" if name else prefix_end(prefix)
        if opts.resource_version in ("", "0"):
            initial = await self.list(
                resource,
                namespace,
                ListOptions(opts.label_selector, opts.field_selector, resource_version=opts.resource_version),
            )
            for item in initial["items"]:
                if fields(item):
                    yield {"type": "ADDED", "object": item}
            start = int(initial["metadata"]["resourceVersion"]) + 1
        else:
            try:
                start = int(opts.resource_version) + 1
            except ValueError:
                raise errors.bad_request(f"invalid resourceVersion {opts.resource_version!r}") from None
        request = kv_pb2.WatchRequest(
            key=prefix,
            range_end=end,
            start_revision=start,
            prev_kv=True,
            progress_notify_seconds=5.0 if bookmarks else 0,
        )
        try:
            async for resp in self.store.watch(request):
                if resp.created:
                    continue
                if not resp.events:
                    if bookmarks:
                        yield {
                            "type": "BOOKMARK",
                            "object": {
                                "kind": resource.kind,
                                "apiVersion": resource.api_version,
                                "metadata": {"resourceVersion": str(resp.header.revision)},
                            },
                        }
                    continue
                for ev in resp.events:
                    if not (may_match(ev.kv.value) or (ev.HasField("prev_kv") and may_match(ev.prev_kv.value))):
                        continue  # it cannot match the field selector: not parsed
                    event = self._translate(ev, labels, fields)
                    if event is not None:
                        yield event
        except CommandFailed as e:
            if e.code != ErrorCode.COMPACTED:
                raise
            yield {
                "type": "ERROR",
                "object": errors.gone(f"too old resource version: {start - 1} ({e.compact_revision})").status(),
            }

    def _translate(
        self, ev: kv_pb2.Event, labels: Callable[[Object], bool], fields: Callable[[Object], bool]
    ) -> Object | None:
        prev = self.decode(ev.prev_kv) if ev.HasField("prev_kv") else None
        prev_matches = prev is not None and labels(prev) and fields(prev)
        if ev.type == kv_pb2.Event.DELETE:
            if not prev_matches or prev is None:
                return None
            prev["metadata"]["resourceVersion"] = str(ev.kv.mod_revision)
            return {"type": "DELETED", "object": prev}
        obj = self.decode(ev.kv)
        matches = labels(obj) and fields(obj)
        if matches:
            return {"type": "MODIFIED" if prev_matches else "ADDED", "object": obj}
        if prev_matches:
            # It no longer matches the selectors: to this watcher it is gone.
            return {"type": "DELETED", "object": obj}
        return None

    # -- bootstrap -----------------------------------------------------------------

    async def _namespace_defaults(self, namespace: str) -> None:
        """Every namespace has a `default` ServiceAccount and the
        `kube-root-ca.crt` ConfigMap (the CA pods use to trust the API: the
        ServiceAccount admission mounts it), made here with it until the
        controllers that own them in Kubernetes exist. The namespace is
        created either way: a failure here is logged, not returned."""
        accounts = self.registry.lookup("", "v1", "serviceaccounts")
        configmaps = self.registry.lookup("", "v1", "configmaps")
        assert accounts is not None and configmaps is not None
        defaults: list[tuple[Resource, Object]] = [(accounts, {"metadata": {"name": "default"}})]
        if self.root_ca_pem:
            root_ca = {"metadata": {"name": ROOT_CA_CONFIGMAP}, "data": {"ca.crt": self.root_ca_pem}}
            defaults.append((configmaps, root_ca))
        for resource, obj in defaults:
            try:
                await self.create(resource, namespace, obj)
            except ApiError as e:
                if e.code != 409:
                    log.warning("namespace %s: no %s %s yet: %s", namespace, resource.kind, obj["metadata"]["name"], e)

    async def ensure_default_policy(self) -> None:
        """The default ClusterRoles and bindings (bootstrap_policy), created
        when missing and put back when changed while auto-update is on."""
        group = "rbac.authorization.k8s.io"
        for plural, defaults in (
            ("clusterroles", bootstrap_policy.CLUSTER_ROLES),
            ("clusterrolebindings", bootstrap_policy.CLUSTER_ROLE_BINDINGS),
        ):
            resource = self.registry.lookup(group, "v1", plural)
            assert resource is not None
            for default in defaults:
                name = default["metadata"]["name"]
                try:
                    await self.create(resource, "", codec.clone(default))
                    continue
                except ApiError as e:
                    if e.code != 409:
                        raise
                current = await self.get(resource, "", name)
                if bootstrap_policy.needs_update(current, default):
                    fields = ("rules",) if plural == "clusterroles" else ("roleRef", "subjects")

                    def put_back(obj: Object, fields: tuple[str, ...] = fields, default: Object = default) -> Object:
                        for f in fields:
                            obj[f] = codec.clone(default[f])
                        return obj

                    await self.guaranteed_update(resource, "", name, put_back)
                    log.info("put back the default %s %s", resource.kind, name)

    async def ensure_system_namespaces(self) -> None:
        ns = self.registry.lookup("", "v1", "namespaces")
        assert ns is not None
        for name in SYSTEM_NAMESPACES:
            try:
                await self.create(ns, "", {"metadata": {"name": name}})
            except ApiError as e:
                if e.code != 409:
                    raise


_METADATA_OPEN = b'{"metadata":{'


def with_resource_version(value: bytes, revision: int) -> bytes:
    """A stored object's JSON with its resourceVersion, spliced in where
    encode() put the metadata, without parsing the rest."""
    if value.startswith(_METADATA_OPEN):
        n = len(_METADATA_OPEN)
        separator = b"" if value[n : n + 1] == b"}" else b","
        return b'%s"resourceVersion":"%d"%s%s' % (_METADATA_OPEN, revision, separator, value[n:])
    obj = codec.loads(value)  # written some other way: parse it
    obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
    return codec.dumps(obj)


def scale_of(obj: Object) -> Object:
    """The autoscaling/v1 Scale of a workload."""
    meta = obj.get("metadata") or {}
    selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
        },
    }


def _spec_of(obj: Object) -> Any:
    return obj.get("spec") if "spec" in obj else {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _allocation_ops(
    resource: Resource, old: Object | None, new: Object | None
) -> tuple[list[kv_pb2.Compare], list[kv_pb2.RequestOp]]:
    """What a write of a Service does to the allocation keys: the values it
    starts holding must be free (and are created), the ones it lets go are
    deleted, in the same transaction."""
    if resource.plural != "services":
        return [], []
    before, after = allocators.reserved_keys(old), allocators.reserved_keys(new)
    holder = b""
    if new is not None:
        meta = new.get("metadata") or {}
        holder = f"{meta.get('namespace', '')}/{meta.get('name', '')}".encode()
    compares = [kv_pb2.Compare(key=k, target=kv_pb2.Compare.CREATE, create_revision=0) for k in sorted(after - before)]
    ops = [kv_pb2.RequestOp(request_put=kv_pb2.PutRequest(key=k, value=holder)) for k in sorted(after - before)]
    ops += [kv_pb2.RequestOp(request_delete_range=kv_pb2.DeleteRangeRequest(key=k)) for k in sorted(before - after)]
    return compares, ops


def _held(resource: Resource, obj: Object) -> bool:
    """Whether an object being deleted must stay although its metadata
    finalizers are gone: a scheduled pod until its node confirms the stop
    (a delete with grace period 0), a namespace until the namespace
    controller has emptied it and cleared spec.finalizers."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    if resource.plural == "pods":
        return bool(spec.get("nodeName")) and int(meta.get("deletionGracePeriodSeconds") or 0) > 0
    return resource.plural == "namespaces" and bool(spec.get("finalizers"))


def _success_status(resource: Resource, name: str, uid: str) -> Object:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": resource.group, "kind": resource.plural, "uid": uid},
    }


def _encode_continue(revision: int, start: bytes, prefix: bytes) -> str:
    token = {"v": "raftkube/v1", "rv": revision, "start": start[len(prefix) :].decode("latin-1")}
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode()


def _decode_continue(token: str, prefix: bytes) -> tuple[int, bytes]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        revision = int(data["rv"])
        start = prefix + str(data["start"]).encode("latin-1")
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise errors.bad_request("invalid continue token") from None
    if data.get("v") != "raftkube/v1" or revision <= 0:
        raise errors.bad_request("invalid continue token")
    return revision, start
