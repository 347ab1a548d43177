"""The declared-intent check: anastrozole advice only in male-only variants, and the backstop."""

from __future__ import annotations

import pytest

from service.ruleset.safety import advice_problems, requires_male, speaks_to_anastrozole

MALE = [{"ctx": {"$and": [{"kind": "context"}, {"anastrozole": 1}, {"sex": "male"}]}}]
MALE_TRT = [{"ctx": {"$and": [{"kind": "context"}, {"sex": "male"}, {"on_testosterone": 1}]}}]
NOT_MALE = [{"ctx": {"$and": [{"kind": "context"}, {"anastrozole": 1}, {"$neq": {"sex": "male"}}]}}]


@pytest.mark.parametrize(
    "text",
    [
        "Decrease the anastrozole to once weekly.",  # the phrase the old regex let through
        "Consider cutting back on Arimidex.",  # brand name
        "Halve the weekly anastrozole.",
        "Taper anastrozole over four weeks.",
        "Pause the Anastrozole until estradiol recovers.",  # capitalised
        "Is anastrozole still needed?",
        "Review whether anastrozole is necessary",
        "The anastrozole dosing can be adjusted",
        "Discontinue anastrozole.",
    ],
)
def test_advice_the_old_regex_did_not_know_is_recognised(text: str) -> None:
    assert speaks_to_anastrozole(text)


@pytest.mark.parametrize(
    "text",
    [
        'The anastrozole label warns "Decreases in bone mineral density may occur."',
        "Anastrozole lowers estradiol, which protects bone.",
        "No DXA scan on record while on anastrozole (aromatase inhibitor).",
        "Lower estradiol thins bone; repeat the DXA in 1-2 years.",  # no drug named
    ],
)
def test_neutral_mentions_are_not_advice(text: str) -> None:
    assert not speaks_to_anastrozole(text)


def test_dose_advice_needs_a_man_on_testosterone() -> None:
    assert advice_problems("dose", ["Lower the anastrozole dose."], MALE_TRT) == []
    assert "{on_testosterone: 1}" in advice_problems("dose", ["x"], MALE)[0]
    assert "{on_testosterone: 1}" in advice_problems("dose", ["x"], NOT_MALE)[0]


def test_indication_advice_needs_a_man() -> None:
    assert advice_problems("indication", ["Confirm why anastrozole is given."], MALE) == []
    assert "requires {sex: male}" in advice_problems("indication", ["x"], NOT_MALE)[0]


def test_an_unknown_declaration_is_refused() -> None:
    assert "must be one of" in advice_problems("yes", ["x"], MALE_TRT)[0]


def test_undeclared_advice_is_refused_even_in_a_male_variant() -> None:
    (problem,) = advice_problems(None, ["Decrease the anastrozole."], MALE_TRT)
    assert "declare anastrozole_advice" in problem


def test_a_neq_male_condition_is_not_male_only() -> None:
    assert requires_male(MALE) and not requires_male(NOT_MALE)
