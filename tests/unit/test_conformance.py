"""How an answer from Azure becomes a world option's value (pure): the table a conformance run reads with."""

from __future__ import annotations

import pytest

from amlwire.domain import conformance as c
from amlwire.domain.azure import IssuerAnswer
from amlwire.domain.conformance import Finding
from amlwire_sandbox.jobs import stream_access_error
from amlwire_sandbox.rules import RULES
from amlwire_sandbox.world import STREAM_ACCESS_SHAPES, World


@pytest.mark.parametrize(
    ("words", "value"),
    [
        (["Creating", "Succeeded"], "specExamples"),
        (["Creating", "Deleting", "Succeeded"], "specExamples"),
        (["InProgress", "InProgress", "Succeeded"], "inProgress"),
        (["Running", "Succeeded"], "other"),
        (["Creating", "Running"], "other"),
        (["Succeeded"], None),
        ([], None),
    ],
)
def test_status_words(words, value):
    assert c.status_word_option(words)[0] == value


@pytest.mark.parametrize(
    ("status", "code", "value"),
    [(400, "InvalidTagNameCharacters", "refuse"), (201, "", "accept"), (200, "", "accept"), (400, "BadArgument", None)],
)
def test_tag_names(status, code, value):
    assert c.tag_names_option(status, code)[0] == value


@pytest.mark.parametrize(
    ("status", "timeout", "value"),
    [
        ("Canceled", "PT1H", "Canceled"),
        ("Failed", "PT1H", "Failed"),
        ("Completed", "PT1H", None),
        ("Failed", None, None),
    ],
)
def test_job_timeout(status, timeout, value):
    assert c.job_timeout_option(status, timeout)[0] == value


@pytest.mark.parametrize("shape", STREAM_ACCESS_SHAPES)
def test_each_shape_of_a_storage_failure_the_sandbox_can_make_is_told_apart(shape):
    assert c.stream_error_option(stream_access_error("AuthorizationPermissionMismatch", shape))[0] == shape


def test_an_error_that_is_not_a_storage_failure_settles_nothing():
    assert c.stream_error_option({"code": "UserError", "message": "exit code 1"})[0] is None
    assert c.stream_error_option(None)[0] is None


@pytest.mark.parametrize(("state", "value"), [("gone", "notFound"), ("publishing", "served"), ("unknown", None)])
def test_deleted_issuer(state, value):
    assert c.deleted_issuer_option(IssuerAnswer(state, "what it answered"))[0] == value


def test_world_options_are_a_document_the_sandbox_loads_and_only_settled_values_are_in_it():
    findings = [
        Finding("tag-names", "400", "refuse"),
        Finding("operation-status-words", "?", None),
        Finding("arm-budget", "12 reads left", None, figures={"remainingReads": 12}),
    ]
    options = c.world_options(findings)
    assert options == {"rules": {"tagNames": "refuse"}}
    assert World.model_validate(options).rules.tag_names == "refuse"


def test_every_probe_settles_a_sandbox_rule_and_every_unverified_option_is_probed_or_said_not_to_be():
    rules = {r.id: r for r in RULES}
    for probe in c.PROBES:
        assert probe.rule in rules, probe.id
        if probe.option:
            assert rules[probe.rule].option.startswith(probe.option), (probe.id, rules[probe.rule].option)
    options = {r.option.split(":")[0].strip() for r in RULES if r.option}
    covered = {p.option for p in c.PROBES if p.option} | set(c.NOT_PROBED)
    assert options - covered == set(), "unverified world options neither probed nor listed in NOT_PROBED"


def test_the_report_names_no_ids():
    subscription, principal = "6f1c2b1e-5c1a-4f5e-9a51-1b2c3d4e5f60", "8e2d4c6a-0b1f-4e3d-a5c7-9b8a7f6e5d02"
    text = f"403 for /subscriptions/{subscription}/resourceGroups/rg by {principal}"
    redacted = c.redact(text)
    assert "6f1c2b1e" not in redacted
    assert "8e2d4c6a" not in redacted
    assert redacted == "403 for <resource> by <id>"


def test_a_timing_is_the_slowest_seen_with_p50_and_max():
    value, figures = c.seconds_option([0.52, 1.49, 0.61])
    assert value == 1.5
    assert figures == {"p50": 0.61, "max": 1.49, "samples": 3}
    assert c.seconds_option([]) == (None, {})
