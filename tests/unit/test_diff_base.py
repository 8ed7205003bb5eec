"""amlwire's diff base builds the essence kopf's own would, plus metadata.generation, without copying what kopf
throws away (managedFields, status): any body, any fields the handlers follow."""

from __future__ import annotations

from typing import Any, cast

import kopf
from hypothesis import given, settings
from hypothesis import strategies as st

from amlwire.handlers.operator import GenerationDiffBase

FIELD = "status.kopf.last-handled-configuration"
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
annotation_maps = st.dictionaries(
    st.sampled_from(
        [
            "kubectl.kubernetes.io/last-applied-configuration",
            "kopf.zalando.org/last-handled-configuration",
            "kopf.zalando.org/touch-dummy",
            "amlwire.io/reconcile-requested-at",
            "example.com/note",
        ]
    ),
    st.text(max_size=8),
)
metadata: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=8), "uid": st.uuids().map(str)},
    optional={
        "generation": st.integers(min_value=1, max_value=9),
        "labels": st.dictionaries(st.text(min_size=1, max_size=6), st.text(max_size=6), max_size=3),
        "annotations": annotation_maps,
        "finalizers": st.lists(st.just("amlwire.io/finalizer"), max_size=1),
        "managedFields": st.lists(st.fixed_dictionaries({"manager": st.text(max_size=6), "fieldsV1": values})),
    },
)
bodies = st.fixed_dictionaries(
    {"apiVersion": st.just("amlwire.io/v1alpha1"), "kind": st.just("AmlJob"), "metadata": metadata},
    optional={"spec": values, "status": st.dictionaries(st.sampled_from(["kopf", "conditions", "x"]), values)},
)
extra_fields = st.sets(st.sampled_from([("metadata", "generation"), ("status", "x"), "status.conditions", "spec"]))


def kopfs_own(body: dict[str, Any], fields: set[Any]) -> Any:
    essence = kopf.StatusDiffBaseStorage(field=FIELD).build(
        body=kopf.Body(cast(kopf.RawBody, body)), extra_fields=fields
    )
    generation = body["metadata"].get("generation")
    if generation is not None:
        essence.setdefault("metadata", {})["generation"] = generation  # type: ignore[typeddict-unknown-key]
    return essence


@settings(max_examples=300, deadline=None)
@given(bodies, extra_fields)
def test_the_essence_is_kopfs_own_with_the_generation(body, fields):
    assert GenerationDiffBase(field=FIELD).build(
        body=kopf.Body(cast(kopf.RawBody, body)), extra_fields=fields
    ) == kopfs_own(body, fields)


def test_the_essence_is_not_a_view_of_the_body():
    body = {"metadata": {"name": "a", "generation": 2, "labels": {"team": "x"}}, "spec": {"inputs": {"lr": 1}}}
    essence = GenerationDiffBase(field=FIELD).build(body=kopf.Body(cast(kopf.RawBody, body)), extra_fields=set())
    body["spec"]["inputs"]["lr"] = 2
    body["metadata"]["labels"]["team"] = "y"
    assert essence == {"spec": {"inputs": {"lr": 1}}, "metadata": {"labels": {"team": "x"}, "generation": 2}}
