"""Lenient FHIR reading: dates, codings, quantities, references."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from cds_hooks.fhir import bundle_resources, reference_id
from service.clinical.fhir import coded, codings, parse_date, quantity


@pytest.mark.parametrize(
    ("value", "day", "text"),
    [
        ("2025", date(2025, 1, 1), "2025"),  # partial: year
        ("2025-03", date(2025, 3, 1), "2025-03"),  # partial: month
        ("2025-03-14", date(2025, 3, 14), "2025-03-14"),
        ("2025-03-14T23:30:00-05:00", date(2025, 3, 15), "2025-03-15"),  # reduced to the UTC day
        ("2025-03-14T10:00:00Z", date(2025, 3, 14), "2025-03-14"),
    ],
)
def test_parse_date_accepts_fhir_precisions(value: str, day: date, text: str) -> None:
    parsed = parse_date(value)
    assert parsed is not None and (parsed.day, parsed.text) == (day, text)


@pytest.mark.parametrize("value", [None, 20250101, "", "yesterday", "2025-13", "2025-02-30", ["2025"]])
def test_parse_date_rejects_what_is_not_a_date(value: Any) -> None:
    assert parse_date(value) is None


def test_same_day_results_order_by_timestamp() -> None:
    early, late = parse_date("2025-03-14T08:00:00Z"), parse_date("2025-03-14T17:00:00Z")
    assert early is not None and late is not None and early.stamp < late.stamp


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"value": 8.2, "unit": "pg/mL"}, (8.2, "=", "pg/mL")),
        ({"value": 24, "comparator": "<", "code": "pg/mL", "unit": "picogram/mL"}, (24.0, "<", "pg/mL")),
        ({"value": "8.2", "unit": "pg/mL"}, None),  # a string is not a number
        ({"value": True, "unit": "pg/mL"}, None),
        ({"value": 8, "comparator": "ad", "unit": "pg/mL"}, None),  # comparator outside FHIR's set
        ({"unit": "pg/mL"}, None),
        ("8.2 pg/mL", None),
    ],
)
def test_quantity(raw: Any, expected: tuple[float, str, str] | None) -> None:
    got = quantity({"valueQuantity": raw})
    assert (None if got is None else (got.value, got.comparator, got.unit)) == expected


def test_codings_tolerates_a_lone_coding_object_and_junk() -> None:
    concept = {"coding": {"system": "http://loinc.org", "code": "2243-4"}}
    assert list(codings(concept)) == [("http://loinc.org", "2243-4", "")]
    assert list(codings({"coding": [None, 5, {"code": 7}, {"code": "x"}]})) == [("", "x", "")]
    assert list(codings("2243-4")) == []


@pytest.mark.parametrize(
    "concept",
    [
        {"coding": {"system": "http://loinc.org", "code": "2243-4", "display": "E2"}},
        {
            "coding": [
                None,
                5,
                {"code": 7},
                {"code": "x"},
                {"code": "", "system": "s"},
                {"code": "y", "system": 3},
            ]
        },
        {"coding": "2243-4"},
        {"text": "estradiol"},
        "2243-4",
        None,
    ],
)
def test_coded_reads_the_pairs_codings_reads(concept: Any) -> None:
    assert coded(concept) == [(system, code) for system, code, _ in codings(concept)]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ({"reference": "Patient/123"}, "123"),
        ({"reference": "https://ehr.example.org/fhir/Patient/123"}, "123"),
        ({"reference": "Patient/123/_history/2"}, "123"),
        ({"reference": "Group/9"}, None),
        ({"display": "John"}, None),
        ("Patient/123", None),
    ],
)
def test_reference_id(ref: Any, expected: str | None) -> None:
    assert reference_id(ref, "Patient") == expected


def test_bundle_resources_skips_junk_and_accepts_a_bundle_without_type() -> None:
    bundle = {
        "resourceType": "Bundle",
        "entry": [{"resource": {"resourceType": "Patient"}}, {"x": 1}, 5, {"resource": 3}],
    }
    assert list(bundle_resources(bundle)) == [{"resourceType": "Patient"}]
    assert list(bundle_resources({"resourceType": "Patient", "id": "p"})) == [
        {"resourceType": "Patient", "id": "p"}
    ]
    assert list(bundle_resources({"resourceType": "Bundle", "entry": "nope"})) == []
