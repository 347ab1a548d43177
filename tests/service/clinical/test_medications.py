"""Medications are recognised by class (SPEC §2): by RxNorm code first, by name only when no code is known."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from service.clinical.medications import is_medication, medication_groups, medication_members, memberships
from service.ruleset.model import RuleSet
from service.settings import PACKAGED_RULES_DIR

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC = "http://hl7.org/fhir/sid/ndc"
LOCAL = "urn:oid:1.2.3.4.5.local-formulary"


def _class_file(cls: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((PACKAGED_RULES_DIR / "classes" / f"{cls}.yaml").read_text("utf-8"))
    return data


def _one_per_member(tty: str) -> list[Any]:
    """(class, member, rxcui) for the first concept of this term type of every member that has one."""
    found = []
    for cls in ("anastrozole", "testosterone", "bone-agent"):
        for member, spec in _class_file(cls)["members"].items():
            codes = [c["rxcui"] for c in spec["concepts"] if c["tty"] == tty]
            if codes:
                found.append(pytest.param(cls, member, codes[0], id=f"{member}-{codes[0]}"))
    return found


def _members_without(tty: str) -> set[str]:
    return {
        member
        for cls in ("anastrozole", "testosterone", "bone-agent")
        for member, spec in _class_file(cls)["members"].items()
        if not any(c["tty"] == tty for c in spec["concepts"])
    }


def coded(
    *codings: tuple[str, str], text: str | None = None, kind: str = "MedicationRequest"
) -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [{"system": s, "code": c} for s, c in codings]}
    if text is not None:
        concept["text"] = text
    return {"resourceType": kind, "id": "m", "status": "active", "medicationCodeableConcept": concept}


# ---- by code ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "member", "code"), _one_per_member("SCD"))
def test_a_drug_coded_only_by_a_clinical_drug_scd_is_its_member(
    ruleset: RuleSet, cls: str, member: str, code: str
) -> None:
    request = coded((RXNORM, code))
    assert is_medication(ruleset, request, cls, [])
    assert medication_members(ruleset, request, []) == {member}


@pytest.mark.parametrize(("cls", "member", "code"), _one_per_member("SBD"))
def test_a_drug_coded_only_by_a_branded_drug_sbd_is_its_member(
    ruleset: RuleSet, cls: str, member: str, code: str
) -> None:
    assert medication_members(ruleset, coded((RXNORM, code)), []) == {member}


@pytest.mark.parametrize(("cls", "member", "code"), _one_per_member("SCD"))
def test_a_medication_statement_coded_by_an_scd_is_recognised_the_same_way(
    ruleset: RuleSet, cls: str, member: str, code: str
) -> None:
    statement = coded((RXNORM, code), kind="MedicationStatement")
    assert is_medication(ruleset, statement, cls, [])
    assert medication_members(ruleset, statement, []) == {member}


def test_members_without_an_scd_in_the_sources_are_the_known_gaps() -> None:
    # The published expansions hold only ingredient, brand and grouper codes for these; their
    # clinical drugs are recognised by the ingredient code or by name (README, medication classes).
    assert _members_without("SCD") == {
        "methyltestosterone",
        "abaloparatide",
        "romosozumab",
        "tiludronate",
        "clodronate",
    }


def test_every_member_is_recognised_by_each_of_its_ingredient_codes(ruleset: RuleSet) -> None:
    for cls in ("anastrozole", "testosterone", "bone-agent"):
        for member, spec in _class_file(cls)["members"].items():
            for ingredient in spec["ingredients"]:
                assert medication_members(ruleset, coded((RXNORM, ingredient["rxcui"])), []) == {member}


def test_the_bone_agent_groups_are_read_from_the_class_file(ruleset: RuleSet) -> None:
    assert medication_groups(ruleset, coded((RXNORM, "993452")), []) == {"denosumab"}  # Prolia syringe
    assert medication_groups(ruleset, coded((RXNORM, "1435115")), []) == {"anabolic"}  # teriparatide pen
    assert medication_groups(ruleset, coded((RXNORM, "904431")), []) == {"bisphosphonate"}  # alendronic acid


def test_a_code_of_another_class_wins_over_a_brand_name_in_the_text(ruleset: RuleSet) -> None:
    request = coded((RXNORM, "904431"), text="alendronic acid 70 mg (patient also uses AndroGel)")
    assert medication_members(ruleset, request, []) == {"alendronate"}
    assert not is_medication(ruleset, request, "testosterone", [])


def test_a_known_non_member_code_wins_over_the_text(ruleset: RuleSet) -> None:
    # Letrozole (72965) is listed as not anastrozole, so its text cannot make it anastrozole.
    request = coded((RXNORM, "72965"), text="letrozole 2.5 mg (replaces anastrozole)")
    assert memberships(ruleset, request, []) == frozenset()


def test_an_estrogen_testosterone_combination_is_not_testosterone_therapy(ruleset: RuleSet) -> None:
    assert not is_medication(
        ruleset, coded((RXNORM, "214553"), text="estradiol / testosterone"), "testosterone", []
    )


# ---- by name, when no code is known --------------------------------------------------------------
def test_a_local_code_with_a_brand_name_is_recognised_by_its_text(ruleset: RuleSet) -> None:
    request = coded((LOCAL, "TRT-162"), text="AndroGel 1.62% gel")
    assert medication_members(ruleset, request, []) == {"testosterone"}


def test_an_rxnorm_code_no_class_knows_lets_the_text_decide(ruleset: RuleSet) -> None:
    request = coded((RXNORM, "99999999"), text="Prolia 60 mg/mL syringe")
    assert medication_members(ruleset, request, []) == {"denosumab"}


def test_an_ndc_only_drug_is_recognised_by_its_coding_display(ruleset: RuleSet) -> None:
    request: dict[str, Any] = coded()
    request["medicationCodeableConcept"]["coding"] = [
        {"system": NDC, "code": "0078-0435-61", "display": "Reclast 5 MG in 100 ML Injection"}
    ]
    assert medication_members(ruleset, request, []) == {"zoledronic-acid"}


def test_a_drug_without_codes_or_text_is_in_no_class(ruleset: RuleSet) -> None:
    assert memberships(ruleset, {"resourceType": "MedicationRequest", "status": "active"}, []) == frozenset()


@pytest.mark.parametrize(
    ("text", "member"),
    [
        ("Prolia", "denosumab"),
        ("PROLIA 60 mg", "denosumab"),
        ("denosumab-bbdz (Jubbonti)", "denosumab"),
        ("alendronate sodium 70 mg tablet", "alendronate"),
        ("Alendronic  acid 70 mg", "alendronate"),
        ("testosterone cypionate 200 mg/mL (compounded)", "testosterone"),
        ("Depo-Testosterone 200 mg/mL", "testosterone"),
        ("methyltestosterone 10 mg capsule", "methyltestosterone"),
        ("zoledronate 5 mg IV", "zoledronic-acid"),
        ("anastrozole 0.5 mg capsule (compounded)", "anastrozole"),
    ],
)
def test_names_match_as_whole_words_with_their_salt_forms(ruleset: RuleSet, text: str, member: str) -> None:
    assert medication_members(ruleset, coded(text=text), []) == {member}


@pytest.mark.parametrize(
    "text",
    ["Proliant cream", "alendron 70 mg", "testosterone-free regimen", "nonanastrozole", "Testimony"],
)
def test_a_name_inside_another_word_is_not_a_mention(ruleset: RuleSet, text: str) -> None:
    assert memberships(ruleset, coded(text=text), []) == frozenset()


def test_methyltestosterone_text_is_testosterone_class_but_not_the_testosterone_member(
    ruleset: RuleSet,
) -> None:
    request = coded(text="methyltestosterone 10 mg")
    assert is_medication(ruleset, request, "testosterone", [])
    assert "testosterone" not in medication_members(ruleset, request, [])


# ---- referenced and contained Medications --------------------------------------------------------
def test_a_contained_medication_is_recognised_by_its_ingredient_list(ruleset: RuleSet) -> None:
    request = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "contained": [
            {
                "resourceType": "Medication",
                "id": "med",
                "code": {"coding": [{"system": LOCAL, "code": "compounded-7"}]},
                "ingredient": [
                    {"itemCodeableConcept": {"coding": [{"system": RXNORM, "code": "993449"}]}},
                    {"itemCodeableConcept": {"text": "sodium chloride 0.9%"}},
                ],
            }
        ],
        "medicationReference": {"reference": "#med"},
    }
    assert medication_members(ruleset, request, []) == {"denosumab"}


def test_a_contained_medication_with_only_ingredient_texts_is_read_by_name(ruleset: RuleSet) -> None:
    request = {
        "resourceType": "MedicationStatement",
        "status": "active",
        "contained": [
            {
                "resourceType": "Medication",
                "id": "m1",
                "ingredient": [{"itemReference": {"display": "Forteo"}}],
            }
        ],
        "medicationReference": {"reference": "#m1"},
    }
    assert medication_members(ruleset, request, []) == {"teriparatide"}


def test_a_medication_in_the_bundle_is_followed_by_reference(ruleset: RuleSet) -> None:
    medication = {
        "resourceType": "Medication",
        "id": "rx-1",
        "code": {"coding": [{"system": RXNORM, "code": "151124"}]},
    }
    request = {"resourceType": "MedicationRequest", "medicationReference": {"reference": "Medication/rx-1"}}
    assert is_medication(ruleset, request, "anastrozole", [medication])
    assert not is_medication(ruleset, request, "anastrozole", [])
