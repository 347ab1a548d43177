"""Facts derived from FHIR (SPEC §3): units, censoring, status, latest wins, drafts as orders."""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pytest

from service.clinical.display import fmt_number
from service.clinical.facts import FactBuilder, PatientData
from service.ruleset.model import RuleSet
from tests.builders import med, obs

TODAY = date.today()


def data(
    resources: list[dict[str, Any]], drafts: list[dict[str, Any]] | None = None, gender: Any = "male"
) -> PatientData:
    return PatientData(
        patient_id="f1",
        patient={"resourceType": "Patient", "id": "f1", "gender": gender},
        resources=resources,
        drafts=drafts or [],
        hook="order-sign",
        anastrozole_drafts=[],
    )


def test_every_kind_is_asserted_even_when_absent(ruleset: RuleSet) -> None:
    facts = FactBuilder(ruleset, TODAY).build(data([]))
    kinds = ["context", "estradiol", "vitamin_d", "testosterone", "dxa", "bone", "safety", "bmd_trend"]
    assert [f.kind for f in facts] == kinds
    assert all(f.fields["count"] == 0 for f in facts[1:-2])
    assert facts[-2].fields["unknown"] == 3
    assert facts[-1].fields == {"count": 0}


def test_estradiol_pmol_is_normalised_to_pg_ml(ruleset: RuleSet) -> None:
    fact = FactBuilder(ruleset, TODAY).lab(data([obs("e", "f1", "14715-7", 36.71, "pmol/L", 5)]), "estradiol")
    assert fact.fields["value"] == 10.0
    assert fact.evidence["text"] == "36.71 pmol/L (10 pg/mL)"


def test_vitamin_d_nmol_is_normalised_to_ng_ml(ruleset: RuleSet) -> None:
    fact = FactBuilder(ruleset, TODAY).lab(data([obs("v", "f1", "62292-8", 74.88, "nmol/L", 5)]), "vitamin_d")
    assert fact.fields["value"] == 30.0


def test_unknown_unit_is_not_interpreted(ruleset: RuleSet) -> None:
    fact = FactBuilder(ruleset, TODAY).lab(data([obs("e", "f1", "2243-4", 8, "mg/dL", 5)]), "estradiol")
    assert fact.fields["count"] == 0


def test_censored_value_keeps_its_comparator(ruleset: RuleSet) -> None:
    fact = FactBuilder(ruleset, TODAY).lab(
        data([obs("e", "f1", "2243-4", 24, "pg/mL", 5, comparator="<")]), "estradiol"
    )
    assert (fact.fields["value"], fact.fields["comparator"]) == (24.0, "<")
    assert fact.evidence["text"] == "<24 pg/mL"


def test_unusable_statuses_are_ignored(ruleset: RuleSet) -> None:
    builder = FactBuilder(ruleset, TODAY)
    for status in ("entered-in-error", "preliminary", "cancelled", "registered", "unknown"):
        assert (
            builder.lab(data([obs("e", "f1", "2243-4", 5, "pg/mL", 5, status=status)]), "estradiol").fields[
                "count"
            ]
            == 0
        )
    for status in ("final", "amended", "corrected"):
        assert (
            builder.lab(data([obs("e", "f1", "2243-4", 5, "pg/mL", 5, status=status)]), "estradiol").fields[
                "count"
            ]
            == 1
        )


def test_future_dated_results_are_not_used(ruleset: RuleSet) -> None:
    fact = FactBuilder(ruleset, TODAY).lab(data([obs("e", "f1", "2243-4", 5, "pg/mL", -3)]), "estradiol")
    assert fact.fields["count"] == 0


def test_partial_date_counts_from_its_earliest_day(ruleset: RuleSet) -> None:
    result = obs("e", "f1", "2243-4", 5, "pg/mL", 0)
    result["effectiveDateTime"] = str(TODAY.year - 1)
    fact = FactBuilder(ruleset, TODAY).lab(data([result]), "estradiol")
    assert fact.fields["days_ago"] == (TODAY - date(TODAY.year - 1, 1, 1)).days
    assert fact.evidence["date"] == str(TODAY.year - 1)


def test_issued_is_used_when_there_is_no_effective_date(ruleset: RuleSet) -> None:
    result = obs("e", "f1", "2243-4", 5, "pg/mL", 0)
    del result["effectiveDateTime"]
    result["issued"] = (TODAY - timedelta(days=12)).isoformat() + "T09:00:00Z"
    assert FactBuilder(ruleset, TODAY).lab(data([result]), "estradiol").fields["days_ago"] == 12


def test_lowest_t_score_on_the_most_recent_date(ruleset: RuleSet) -> None:
    resources = [
        obs("old", "f1", "38264-8", -3.5, "{T-score}", 400),
        obs("spine", "f1", "38267-1", -1.1, "{T-score}", 30),
        obs("hip", "f1", "80946-7", -2.0, "1", 30),
    ]
    fact = FactBuilder(ruleset, TODAY).bone(data(resources))
    assert fact.fields["tscore"] == -2.0 and fact.fields["days_ago"] == 30


def test_draft_testosterone_and_antiresorptive_count(ruleset: RuleSet) -> None:
    drafts = [med("t", "f1", "835829", status="draft"), med("a", "f1", None, "Fosamax 70 mg", status="draft")]
    fact = FactBuilder(ruleset, TODAY).context(data([], drafts))
    assert fact.fields["on_testosterone"] == 1 and fact.fields["on_bone_agent"] == 1


def test_stopped_testosterone_does_not_count(ruleset: RuleSet) -> None:
    fact = FactBuilder(ruleset, TODAY).context(data([med("t", "f1", "835829", status="stopped")]))
    assert fact.fields["on_testosterone"] == 0


def test_unrecognised_gender_is_unknown(ruleset: RuleSet) -> None:
    for gender in (None, "M", 1, "unknown"):
        assert FactBuilder(ruleset, TODAY).context(data([], gender=gender)).fields["sex"] == "unknown"


def test_active_order_in_the_record_counts_as_ordered(ruleset: RuleSet) -> None:
    order = {
        "resourceType": "ServiceRequest",
        "id": "s",
        "status": "active",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2243-4"}]},
    }
    assert FactBuilder(ruleset, TODAY).lab(data([order]), "estradiol").fields["ordered"] == 1
    order["status"] = "revoked"
    assert FactBuilder(ruleset, TODAY).lab(data([order]), "estradiol").fields["ordered"] == 0


def test_fmt_number_never_rounds_across_a_threshold() -> None:
    assert fmt_number(9.9973) == "9.997"
    assert fmt_number(10.0) == "10"
    assert fmt_number(-2.5) == "-2.5"
    assert fmt_number(-0.0001) == "0"


def test_fmt_number_truncates_as_exact_decimal_arithmetic_does() -> None:
    # The reference: the shortest repr as an exact decimal, cut toward zero at 3 places.
    def reference(value: float) -> str:
        out = format(Decimal(repr(value)).quantize(Decimal("0.001"), rounding=ROUND_DOWN).normalize(), "f")
        return "0" if out in ("-0", "0") else out

    rng = random.Random(20261128)
    values = [rng.uniform(-10, 10) for _ in range(3000)] + [rng.uniform(-1e6, 1e6) for _ in range(1000)]
    values += [round(v, rng.randint(0, 5)) for v in values[:2000]]
    values += [0.0, -0.0, 1e-5, -3e-5, 0.00099, 0.001, 999_999.9999, 5, -2.4996, 9.9996]
    for value in values:
        assert fmt_number(value) == reference(value), value


def test_estradiol_in_ng_dl_is_converted(ruleset: RuleSet) -> None:
    fact = FactBuilder(ruleset, TODAY).lab(data([obs("e", "f1", "2243-4", 2.5, "ng/dL", 5)]), "estradiol")
    assert fact.fields["value"] == 25.0


def test_newer_unreadable_result_is_flagged(ruleset: RuleSet) -> None:
    older = obs("old", "f1", "2243-4", 8, "pg/mL", 100)
    newer = obs("new", "f1", "2243-4", None, "pg/mL", 5)
    newer["valueString"] = "see report"
    fact = FactBuilder(ruleset, TODAY).lab(data([newer, older]), "estradiol")
    assert (fact.fields["value"], fact.fields["newer_unread"]) == (8.0, 1)
    alone = FactBuilder(ruleset, TODAY).lab(data([older]), "estradiol")
    assert alone.fields["newer_unread"] == 0


def test_implausible_values_are_not_results(ruleset: RuleSet) -> None:
    builder = FactBuilder(ruleset, TODAY)
    assert builder.lab(data([obs("e", "f1", "2243-4", 1e16, "pg/mL", 5)]), "estradiol").fields["count"] == 0
    assert builder.bone(data([obs("t", "f1", "38267-1", -40, "1", 5)])).fields["count"] == 0


def test_status_of_the_wrong_type_is_not_usable(ruleset: RuleSet) -> None:
    result = obs("e", "f1", "2243-4", 5, "pg/mL", 5)
    result["status"] = ["final"]
    assert FactBuilder(ruleset, TODAY).lab(data([result]), "estradiol").fields["count"] == 0


@pytest.mark.parametrize("value", [0, 0.0, -1])
def test_an_estradiol_of_zero_or_less_is_unreadable_not_low(ruleset: RuleSet, value: float) -> None:
    # Issue 13: an E2 of 0 gave a "lower the dose" card. It is implausible, so no result at all.
    fact = FactBuilder(ruleset, TODAY).lab(data([obs("e", "f1", "2243-4", value, "pg/mL", 5)]), "estradiol")
    assert fact.fields["count"] == 0
