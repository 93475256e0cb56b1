"""Field ownership and server-side apply, checked against what Kubernetes'
structured-merge-diff does with the same writes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.apis.errors import ApiError
from control_plane.apiserver import managed_fields as mf
from control_plane.apiserver.managed_fields import Manager

NOW = "2026-11-22T10:00:00Z"
V = "apps/v1"


def deployment(image: str = "nginx:1.27", ports: list[int] | None = None, replicas: int | None = 2) -> dict[str, Any]:
    web: dict[str, Any] = {"name": "web", "image": image}
    if ports:
        web["ports"] = [{"containerPort": p} for p in ports]
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "d"}},
        "template": {
            "metadata": {"labels": {"app": "d"}},
            "spec": {"containers": [web, {"name": "sidecar", "image": "busybox"}]},
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": V, "kind": "Deployment", "metadata": {"name": "d", "labels": {"tier": "fe"}}, "spec": spec}


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return result


def owners(obj: dict[str, Any]) -> dict[str, set[str]]:
    return {
        e["manager"]: {mf.describe(p) for p in mf.from_fields_v1(e["fieldsV1"])}
        for e in obj["metadata"]["managedFields"]
    }


def created(config: dict[str, Any], manager: str = "kubectl") -> dict[str, Any]:
    obj = copy.deepcopy(config)
    obj["metadata"]["managedFields"] = mf.created_by_apply(config, Manager(manager, "Apply"), V, NOW)
    return obj


def test_field_set_keys_list_items_by_their_merge_key() -> None:
    paths = {mf.describe(p) for p in mf.field_set(deployment(ports=[80]))}
    assert '.spec.template.spec.containers[name="web"]' in paths
    assert '.spec.template.spec.containers[name="web"].ports[containerPort=80].containerPort' in paths
    assert ".spec.selector.matchLabels.app" in paths
    assert ".metadata.labels.tier" in paths
    assert not any(p.startswith((".metadata.name", ".apiVersion", ".kind")) for p in paths)


def test_fields_v1_round_trips_and_marks_items_with_a_dot() -> None:
    paths = mf.field_set(deployment(ports=[80, 443]))
    tree = mf.to_fields_v1(paths)
    assert mf.from_fields_v1(tree) == paths
    item = tree["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert item["."] == {} and item["f:image"] == {}


def test_reapplying_without_a_port_and_with_a_new_image_merges_containers_by_name() -> None:
    live = created(deployment(ports=[80, 443]))
    out = mf.apply(live, deployment(image="nginx:1.28", ports=[80]), Manager("kubectl", "Apply"), False, V, NOW)
    web, sidecar = containers(out)
    assert web == {"name": "web", "image": "nginx:1.28", "ports": [{"containerPort": 80}]}
    assert sidecar == {"name": "sidecar", "image": "busybox"}


def test_dropping_the_last_port_removes_the_list() -> None:
    live = created(deployment(ports=[80]))
    out = mf.apply(live, deployment(), Manager("kubectl", "Apply"), False, V, NOW)
    assert "ports" not in containers(out)[0]


def test_a_field_another_manager_changed_is_a_conflict_until_forced() -> None:
    live = created(deployment())
    # kubectl scale (an Update by another manager) changes replicas.
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    scaled["metadata"]["managedFields"] = mf.record_update(
        live, scaled, Manager("kubectl-scale", "Update", "scale"), V, NOW
    )
    assert ".spec.replicas" in owners(scaled)["kubectl-scale"]
    assert ".spec.replicas" not in owners(scaled)["kubectl"]

    with pytest.raises(ApiError) as err:
        mf.apply(scaled, deployment(replicas=3), Manager("kubectl", "Apply"), False, V, NOW)
    assert err.value.code == 409
    assert (
        err.value.message == 'Apply failed with 1 conflict: conflict with "kubectl-scale" using apps/v1: .spec.replicas'
    )
    assert [(c.field, c.reason) for c in err.value.causes] == [(".spec.replicas", "FieldManagerConflict")]

    forced = mf.apply(scaled, deployment(replicas=3), Manager("kubectl", "Apply"), True, V, NOW)
    assert forced["spec"]["replicas"] == 3
    assert "kubectl-scale" not in owners(forced)  # it owned only replicas, now taken


def test_applying_the_value_another_manager_set_shares_the_field() -> None:
    live = created(deployment(replicas=2), "alice")
    out = mf.apply(live, deployment(replicas=2), Manager("bob", "Apply"), False, V, NOW)
    assert ".spec.replicas" in owners(out)["alice"] and ".spec.replicas" in owners(out)["bob"]


def test_a_field_dropped_by_one_applier_stays_while_another_owns_it() -> None:
    live = created(deployment(replicas=2), "alice")
    shared = mf.apply(live, deployment(replicas=2), Manager("bob", "Apply"), False, V, NOW)
    alice_drops = mf.apply(shared, deployment(replicas=None), Manager("alice", "Apply"), False, V, NOW)
    assert alice_drops["spec"]["replicas"] == 2
    bob_drops = mf.apply(alice_drops, deployment(replicas=None), Manager("bob", "Apply"), False, V, NOW)
    assert "replicas" not in bob_drops["spec"]


def test_an_update_that_removes_a_field_takes_it_from_every_manager() -> None:
    live = created(deployment())
    edited = copy.deepcopy(live)
    del edited["metadata"]["labels"]
    edited["metadata"]["managedFields"] = mf.record_update(live, edited, Manager("kubectl-edit"), V, NOW)
    assert ".metadata.labels.tier" not in owners(edited)["kubectl"]
    assert "kubectl-edit" not in owners(edited)  # it changed nothing that remains


def test_status_writes_are_tracked_apart_from_the_spec() -> None:
    live = created(deployment())
    with_status = copy.deepcopy(live)
    with_status["status"] = {"replicas": 2}
    entries = mf.record_update(live, with_status, Manager("controller", "Update", "status"), V, NOW)
    status_entry = next(e for e in entries if e["manager"] == "controller")
    assert status_entry["subresource"] == "status"
    assert mf.from_fields_v1(status_entry["fieldsV1"]) == {("f:status", "f:replicas")}


def test_finalizers_are_a_set() -> None:
    obj = {"metadata": {"name": "x", "finalizers": ["a", "b"]}}
    assert mf.field_set(obj) == {("f:metadata", "f:finalizers", 'v:"a"'), ("f:metadata", "f:finalizers", 'v:"b"')}
    live = created({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "finalizers": ["a"]}}, "one")
    out = mf.apply(
        live,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "finalizers": ["b"]}},
        Manager("two", "Apply"),
        False,
        V,
        NOW,
    )
    assert out["metadata"]["finalizers"] == ["a", "b"]


# -- the update diff against its definition ------------------------------------------------

scalars = st.one_of(st.integers(0, 3), st.sampled_from(["a", "b"]), st.none())
container: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {"name": st.sampled_from(["web", "db", "cache"])},
    optional={
        "image": scalars,
        "ports": st.lists(
            st.fixed_dictionaries({"containerPort": st.integers(1, 3)}),
            max_size=2,
            unique_by=lambda p: int(p["containerPort"]),
        ),
    },
)
objects: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {"name": st.just("x")},
            optional={
                "labels": st.dictionaries(st.sampled_from(["a", "b", "c"]), scalars, max_size=3),
                "finalizers": st.lists(st.sampled_from(["f1", "f2", "f3"]), max_size=3, unique=True),
            },
        )
    },
    optional={
        "spec": st.fixed_dictionaries(
            {},
            optional={
                "replicas": scalars,
                # Keys are unique, as validation requires of containers.
                "containers": st.lists(container, max_size=3, unique_by=lambda c: str(c["name"])),
                "selector": st.one_of(scalars, st.dictionaries(st.sampled_from(["k", "l"]), scalars, max_size=2)),
                "args": st.lists(scalars, max_size=2),
            },
        ),
        "data": st.dictionaries(st.sampled_from(["x", "y"]), scalars, max_size=2),
    },
)


@given(objects, objects)
@settings(max_examples=400, deadline=None)
def test_the_update_diff_is_what_comparing_every_field_gives(old: dict[str, Any], new: dict[str, Any]) -> None:
    old_fields, new_fields = mf.field_set(old), mf.field_set(new)

    def changed(p: mf.Path) -> bool:
        before = mf.value_at(old, p)
        if p[-1].startswith(("k:", "v:")):
            return before is mf._MISSING
        return bool(before != mf.value_at(new, p))

    got_changed: set[mf.Path] = set()
    got_gone: set[mf.Path] = set()
    mf._diff_top(old, new, "", got_changed, got_gone)
    assert got_changed == {p for p in new_fields if changed(p)}
    assert got_gone == old_fields - new_fields


@given(objects)
@settings(max_examples=200, deadline=None)
def test_the_one_walk_fields_v1_is_the_field_set_encoded(obj: dict[str, Any]) -> None:
    assert mf.fields_v1_of(obj) == mf.to_fields_v1(mf.field_set(obj))
    assert mf.from_fields_v1(mf.fields_v1_of(obj)) == mf.field_set(obj)


def test_objects_with_the_same_fields_get_equal_trees_of_their_own() -> None:
    first, second = deployment(), deployment()
    second["metadata"]["name"] = "another"  # the server's, not owned: the tree is the same
    tree = mf.fields_v1_of(first)
    tree["f:spec"]["f:replicas"] = "changed by its caller"
    again = mf.fields_v1_of(second)
    assert again == mf.to_fields_v1(mf.field_set(second))
    assert again["f:spec"]["f:replicas"] == {}
    assert mf.fields_v1_of(first, "status") == {}  # another subresource, another tree


def test_a_big_object_is_walked_without_being_remembered() -> None:
    big = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"k": "x" * 100_000}}
    kept = len(mf._TREES)
    assert mf.fields_v1_of(big) == {"f:data": {"f:k": {}}}
    assert len(mf._TREES) == kept
