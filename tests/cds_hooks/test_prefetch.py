"""Prefetch templates and token substitution (a pure function)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cds_hooks.models import CdsRequest
from cds_hooks.prefetch import is_data, resolve, substitute
from service.errors import PrefetchUnavailable, RequestError
from service.pipeline.prefetch import PREFETCH_KEYS, prefetch_templates
from service.ruleset.model import RuleSet


@pytest.mark.parametrize(
    ("template", "context", "expected"),
    [
        ("Patient/{{context.patientId}}", {"patientId": "123"}, "Patient/123"),
        ("Patient/{{ context.patientId }}", {"patientId": "123"}, "Patient/123"),
        ("X?patient={{context.patientId}}", {"patientId": "a b/c|d"}, "X?patient=a%20b%2Fc%7Cd"),  # encoded
        ("No tokens", {}, "No tokens"),
    ],
)
def test_substitute(template: str, context: dict[str, Any], expected: str) -> None:
    assert substitute(template, context) == expected


@pytest.mark.parametrize(
    ("template", "context"),
    [
        ("{{context.patientId}}", {}),  # missing
        ("{{context.draftOrders}}", {"draftOrders": {"resourceType": "Bundle"}}),  # not a primitive
        ("{{userPractitionerId}}", {}),  # not supported
    ],
)
def test_substitute_refuses_what_cannot_be_filled(template: str, context: dict[str, Any]) -> None:
    with pytest.raises(RequestError):
        substitute(template, context)


def test_templates_cover_every_key_and_every_code(ruleset: RuleSet) -> None:
    templates = prefetch_templates(ruleset)
    assert tuple(templates) == PREFETCH_KEYS
    for code in ("38267-1", "24966-4", "90266-8", "90265-0"):
        assert f"%7C{code}" in templates["boneDensity"]
    assert "%7C77080" in templates["dexaProcedures"] and "%7C312681000" in templates["dexaProcedures"]
    assert templates["medications"].endswith("&status=active")


def test_is_data() -> None:
    assert is_data({"resourceType": "Bundle"})
    assert not is_data(None) and not is_data({}) and not is_data([])
    assert not is_data({"resourceType": "OperationOutcome", "issue": []})


def test_resolve_without_fhir_server_names_every_unusable_key(ruleset: RuleSet) -> None:
    request = CdsRequest.model_validate(
        {
            "hook": "patient-view",
            "hookInstance": "x",
            "context": {"patientId": "p1"},
            "prefetch": {"patient": {"resourceType": "Patient"}, "estradiol": None},
        }
    )
    keys = ("patient", "estradiol", "vitaminD")
    with pytest.raises(PrefetchUnavailable) as info:
        asyncio.run(resolve(request, keys, prefetch_templates(ruleset), None, 0.0))
    assert info.value.keys == ["estradiol", "vitaminD"]
