"""Wire models serialise as the spec wants: no nulls, no empties, except cards: []."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cds_hooks.models import Action, Card, CdsResponse, Coding, Indicator, Source, Suggestion, to_json_dict


def test_empty_response_is_exactly_an_empty_card_list() -> None:
    assert to_json_dict(CdsResponse()) == {"cards": []}


def test_nulls_and_empty_collections_are_dropped() -> None:
    card = Card(
        summary="s", indicator=Indicator.info, source=Source(label="x", topic=Coding(code="r")), detail=""
    )
    assert to_json_dict(CdsResponse(cards=[card])) == {
        "cards": [{"summary": "s", "indicator": "info", "source": {"label": "x", "topic": {"code": "r"}}}]
    }


def test_empties_inside_suggested_resources_are_dropped_at_every_depth() -> None:
    # Suggested updates copy the client's draft order, which may carry its own empties.
    draft = {
        "resourceType": "MedicationRequest",
        "id": "d1",
        "note": [{"text": ""}, {}],
        "meta": {"tag": [None, []], "source": None},
        "dosageInstruction": [{"text": "1 mg", "timing": {"repeat": {"frequency": 1, "when": []}}}],
        "doNotPerform": False,
        "priority": 0,
    }
    card = Card(
        summary="s",
        indicator=Indicator.info,
        source=Source(label="x"),
        suggestions=[Suggestion(label="l", actions=[Action(type="update", description="d", resource=draft)])],
    )
    resource = to_json_dict(CdsResponse(cards=[card]))["cards"][0]["suggestions"][0]["actions"][0]["resource"]
    assert resource == {
        "resourceType": "MedicationRequest",
        "id": "d1",
        "dosageInstruction": [{"text": "1 mg", "timing": {"repeat": {"frequency": 1}}}],
        "doNotPerform": False,
        "priority": 0,
    }


def test_summary_must_be_under_140_characters() -> None:
    with pytest.raises(ValidationError):
        Card(summary="x" * 140, indicator=Indicator.info, source=Source(label="x"))


def test_unknown_fields_are_refused_on_outgoing_models() -> None:
    with pytest.raises(ValidationError):
        Suggestion(label="x", colour="red")  # type: ignore[call-arg]


def test_pruning_keeps_false_zero_and_blank_text() -> None:
    # Only null, "" and empty arrays/objects are dropped: false, 0 and " " are values.
    draft = {"resourceType": "MedicationRequest", "a": [[], [None, ""], {"b": {}}], "c": " ", "d": 0.0}
    card = Card(
        summary="s",
        indicator=Indicator.info,
        source=Source(label="x"),
        suggestions=[Suggestion(label="l", actions=[Action(type="update", description="d", resource=draft)])],
    )
    resource = to_json_dict(CdsResponse(cards=[card]))["cards"][0]["suggestions"][0]["actions"][0]["resource"]
    assert resource == {"resourceType": "MedicationRequest", "c": " ", "d": 0.0}
