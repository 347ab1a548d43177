"""Wire models serialise as the spec wants: no nulls, no empties, except cards: []."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cds_hooks.models import Card, CdsResponse, Coding, Indicator, Source, Suggestion, to_json_dict


def test_empty_response_is_exactly_an_empty_card_list() -> None:
    assert to_json_dict(CdsResponse()) == {"cards": []}


def test_nulls_and_empty_collections_are_dropped() -> None:
    card = Card(
        summary="s", indicator=Indicator.info, source=Source(label="x", topic=Coding(code="r")), detail=""
    )
    assert to_json_dict(CdsResponse(cards=[card])) == {
        "cards": [{"summary": "s", "indicator": "info", "source": {"label": "x", "topic": {"code": "r"}}}]
    }


def test_summary_must_be_under_140_characters() -> None:
    with pytest.raises(ValidationError):
        Card(summary="x" * 140, indicator=Indicator.info, source=Source(label="x"))


def test_unknown_fields_are_refused_on_outgoing_models() -> None:
    with pytest.raises(ValidationError):
        Suggestion(label="x", colour="red")  # type: ignore[call-arg]
