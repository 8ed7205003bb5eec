"""The template registry: every template has its command, and the registry's rules come from its entries."""

from __future__ import annotations

from typing import get_args

from amlwire.api.templates import BY_NAME, TEMPLATE_RULES, TEMPLATES, Template
from amlwire.domain.jobs import COMMAND_BUILDERS


def test_every_template_is_registered_once_and_has_a_command_builder():
    assert [t.name for t in TEMPLATES] == list(get_args(Template))
    assert set(COMMAND_BUILDERS) == set(BY_NAME)


def test_each_need_and_refusal_of_a_template_becomes_a_rule_naming_its_field():
    for template in TEMPLATES:
        for field in (*template.needs, *template.refuses):
            assert any(r.field_path == f".{field}" and template.name in r.cel for r in TEMPLATE_RULES), (
                template.name,
                field,
            )
    paths = [r.field_path for r in TEMPLATE_RULES]
    assert ".isaacLab.framework" in paths
    assert ".gate.metric" in paths
    assert ".resume" in paths
    assert all(r.message.startswith("spec.") for r in TEMPLATE_RULES)
