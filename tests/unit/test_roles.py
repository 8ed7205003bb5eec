"""The built-in roles table (amlwire.api.roles) is the one place role facts live: every consumer reads it, every
entry is used, and what is derived from it matches Learn's "Azure built-in roles" (expected values below are
copied from Learn, not from the code)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from amlwire.api import roles
from amlwire.domain.access import role_definition_id, role_guid

OPERATOR = Path(roles.__file__).resolve().parents[1]
REGISTRY = Path(roles.__file__).resolve()
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def _sources() -> dict[Path, str]:
    return {p: p.read_text() for p in OPERATOR.rglob("*.py") if p != REGISTRY}


def test_no_other_source_spells_a_role_guid():
    known = {r.guid for r in roles.BUILTIN_ROLES}
    spelled = {
        f"{path.relative_to(OPERATOR)}: {found}"
        for path, text in _sources().items()
        for found in GUID.findall(text)
        if found.lower() in known
    }
    assert spelled == set()


def test_every_role_in_the_table_is_used():
    texts = "\n".join(_sources().values())
    derived = roles.BLOB_READERS | roles.BLOB_WRITERS | roles.granting(roles.MODEL_VERSIONS_READ)
    unused = [
        r.name
        for r in roles.BUILTIN_ROLES
        if r.name not in roles.GRANTABLE and f'"{r.name}"' not in texts and r.guid not in derived
    ]
    assert unused == []


@pytest.mark.parametrize("name", roles.GRANTABLE)
def test_every_role_admission_accepts_by_name_has_its_guid(name):
    assert GUID.fullmatch(role_guid(name)), f"{name} would become the role-definition ID at run time"
    assert role_definition_id("s", name).endswith(roles.BY_NAME[name].guid)


def test_a_name_missing_from_the_table_fails_loudly():
    with pytest.raises(KeyError):
        roles.guid("Storage Blob Data Writer")


@pytest.mark.parametrize(
    ("derived", "expected"),
    [
        (roles.BLOB_READERS, {"Storage Blob Data Reader", "Storage Blob Data Contributor", "Storage Blob Data Owner"}),
        (roles.BLOB_WRITERS, {"Storage Blob Data Contributor", "Storage Blob Data Owner"}),
    ],
)
def test_storage_data_roles_follow_their_data_actions(derived, expected):
    assert {roles.BY_GUID[g].name for g in derived} == expected


def test_the_guids_are_learns():
    assert roles.guid("Storage Blob Data Contributor") == "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
    assert roles.guid("AcrPull") == "7f951dda-4ed3-4680-a7ca-43fe172d538d"
    assert roles.guid("Azure Kubernetes Service Cluster Admin Role") == "0ab0b1a8-8aac-4efd-b8c2-3ee1fb270be8"
    assert len({r.guid for r in roles.BUILTIN_ROLES}) == len({r.name for r in roles.BUILTIN_ROLES})
