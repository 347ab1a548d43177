"""Repairing a client's draft before an update is built from it (SPEC §4), with the exact
shapes the CDS Hooks sandbox sends."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from service.cards.drafts import is_valid_fhir
from service.cards.repair import first_problem, list_fields, repair
from tests.sandbox import anastrozole, draft_of


def med_request(**fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": "d1",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {"text": "anastrozole 1 mg tablet"},
        **fields,
    }


def test_the_list_fields_come_from_the_r4_models() -> None:
    fields = list_fields(get_fhir_model_class("MedicationRequest"))
    for name in ("category", "reasonCode", "identifier", "note", "dosageInstruction", "basedOn", "insurance"):
        assert name in fields
    assert "subject" not in fields and "medicationCodeableConcept" not in fields


def test_the_sandbox_draft_with_category_as_an_object_is_invalid_as_sent() -> None:
    assert not is_valid_fhir(draft_of(anastrozole()))


def test_the_sandbox_draft_is_valid_once_repaired() -> None:
    fixed, paths = repair(draft_of(anastrozole()))
    assert paths == ["category"]
    assert fixed["category"] == [draft_of(anastrozole())["category"]]
    assert is_valid_fhir(fixed)


def test_repair_works_on_a_copy() -> None:
    draft = draft_of(anastrozole())
    repair(draft)
    assert isinstance(draft["category"], dict)


def test_a_reason_code_object_from_order_select_becomes_a_list() -> None:
    fixed, paths = repair(med_request(reasonCode={"text": "Gynaecomastia"}))
    assert fixed["reasonCode"] == [{"text": "Gynaecomastia"}] and paths == ["reasonCode"]


def test_single_objects_are_wrapped_at_every_depth() -> None:
    draft = med_request(
        dosageInstruction={
            "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "wk", "dayOfWeek": "mon"}},
            "doseAndRate": {"doseQuantity": {"value": 1, "unit": "mg"}},
        },
        medicationCodeableConcept={
            "coding": {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1"}
        },
    )
    fixed, paths = repair(draft)
    assert fixed["dosageInstruction"][0]["doseAndRate"] == [{"doseQuantity": {"value": 1, "unit": "mg"}}]
    assert fixed["dosageInstruction"][0]["timing"]["repeat"]["dayOfWeek"] == ["mon"]
    assert isinstance(fixed["medicationCodeableConcept"]["coding"], list)
    assert "dosageInstruction[0].doseAndRate" in paths
    assert is_valid_fhir(fixed)


def test_a_contained_resource_is_repaired_with_its_own_model() -> None:
    fixed, _ = repair(
        med_request(
            contained=[
                {
                    "resourceType": "Medication",
                    "id": "m",
                    "ingredient": {"itemCodeableConcept": {"text": "anastrozole"}},
                }
            ]
        )
    )
    assert fixed["contained"][0]["ingredient"] == [{"itemCodeableConcept": {"text": "anastrozole"}}]


def test_a_valid_draft_is_left_as_it_is() -> None:
    draft = med_request(category=[{"text": "community"}])
    assert repair(draft) == (draft, [])


def test_unknown_fields_and_wrong_values_are_not_invented_away() -> None:
    fixed, _ = repair(med_request(authoredOn="yesterday", madeUp={"a": 1}))
    assert fixed["authoredOn"] == "yesterday" and fixed["madeUp"] == {"a": 1}
    assert first_problem(fixed) is not None


def test_first_problem_names_the_field() -> None:
    assert first_problem(med_request(authoredOn="yesterday")) == "`authoredOn` is not valid FHIR R4"
    assert first_problem(med_request()) is None


def test_a_draft_with_a_huge_integer_is_still_copied() -> None:
    fixed, _ = repair(med_request(category={"text": "x"}, extension=[{"url": "u", "valueInteger": 10**30}]))
    assert fixed["extension"][0]["valueInteger"] == 10**30 and fixed["category"] == [{"text": "x"}]
