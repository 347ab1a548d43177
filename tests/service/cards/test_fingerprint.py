"""What a card rests on: the evidence fingerprint and the weekly dose of the draft it acts on."""

from __future__ import annotations

import asyncio
import copy
import json
import random
from typing import Any

import pytest

from cds_hooks.models import Action, Card, Source, Suggestion
from service.cards.fingerprint import _compact_json, acted_on_dose, evidence_fingerprint, weekly_dose
from service.pipeline.registry import Registry
from service.ruleset.scenarios import load_cases, roll_dates
from service.ruleset.schema import Fact, Firing
from service.settings import PACKAGED_RULES_DIR
from tests.builders import SERVICE_FOR_HOOK, med, obs, order_sign

CASES = load_cases(PACKAGED_RULES_DIR)


def e2_fact(**evidence: Any) -> Fact:
    shown = {"source": "Observation/e2-1", "date": "2026-11-01", "value": "6.2", "text": "6.2 pg/mL"}
    return Fact("estradiol", {"count": 1}, shown | {"days_ago": 27} | evidence)


def firing(*facts: Fact, rule_id: str = "low-estradiol") -> Firing:
    return Firing(rule_id, "low", {f"f{i}": fact for i, fact in enumerate(facts)})


def rests_on(registry: Registry, request: dict[str, Any]) -> dict[str, tuple[str, float | None]]:
    """By rule id: the fingerprint and dose of each card the pipeline builds for the request."""

    async def run() -> dict[str, tuple[str, float | None]]:
        call = registry.validate(registry.look_up(SERVICE_FOR_HOOK[request["hook"]]), request)
        if not await registry.about_anastrozole(call):
            return {}
        facts = registry.derive_facts(call, await registry.gather(call))
        issued = registry.build_cards(call, facts, registry.evaluate(call, facts))
        return {c.rule_id: (c.evidence_fingerprint, c.weekly_dose) for c in issued}

    return asyncio.run(run())


def shuffled(request: dict[str, Any], seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    out = copy.deepcopy(request)
    for value in [*out.get("prefetch", {}).values(), out["context"].get("draftOrders")]:
        if isinstance(value, dict) and isinstance(value.get("entry"), list):
            rng.shuffle(value["entry"])
    return out


def draft(
    mg: float = 1, frequency: int = 2, period: float = 1, unit: str = "wk", **dosage: Any
) -> dict[str, Any]:
    order = med("draft-ana", "fp", status="draft")
    order["dosageInstruction"] = [
        {
            "timing": {"repeat": {"frequency": frequency, "period": period, "periodUnit": unit}},
            "doseAndRate": [{"doseQuantity": {"value": mg, "unit": "mg", "code": "mg"}}],
        }
        | dosage
    ]
    return order


def card(*action_types: str) -> Card:
    actions = [Action(type=t, description="x") for t in action_types]  # type: ignore[arg-type]
    return Card(
        summary="s",
        indicator="warning",
        source=Source(label="l"),
        suggestions=[Suggestion(label="x", actions=actions)],
    )


# ---- the fingerprint ------------------------------------------------------------------------
def test_fingerprint_is_a_sha256_hex_digest() -> None:
    found = evidence_fingerprint(firing(e2_fact()))
    assert len(found) == 64 and int(found, 16) >= 0


def test_the_same_evidence_gives_the_same_fingerprint() -> None:
    assert evidence_fingerprint(firing(e2_fact())) == evidence_fingerprint(firing(e2_fact()))


def test_another_rule_on_the_same_evidence_has_another_fingerprint() -> None:
    assert evidence_fingerprint(firing(e2_fact())) != evidence_fingerprint(
        firing(e2_fact(), rule_id="estradiol-monitoring")
    )


@pytest.mark.parametrize(
    "changed",
    [
        {"source": "Observation/e2-2"},  # a newer result
        {"value": "7.1", "text": "7.1 pg/mL"},  # a corrected value on the same resource
        {"date": "2026-11-02"},  # a corrected date on the same resource
    ],
)
def test_new_evidence_gives_another_fingerprint(changed: dict[str, str]) -> None:
    assert evidence_fingerprint(firing(e2_fact(**changed))) != evidence_fingerprint(firing(e2_fact()))


def test_days_passing_do_not_change_the_fingerprint() -> None:
    assert evidence_fingerprint(firing(e2_fact(days_ago=120))) == evidence_fingerprint(firing(e2_fact()))


def test_facts_that_cite_nothing_do_not_change_the_fingerprint() -> None:
    context = Fact("context", {"sex": "male"}, {"sex": "male", "gender": "male"})
    assert evidence_fingerprint(firing(e2_fact(), context)) == evidence_fingerprint(firing(e2_fact()))


def test_several_sources_count_in_any_order() -> None:
    one = e2_fact(sources=["Observation/a", "Observation/b"])
    two = e2_fact(sources=("Observation/b", "Observation/a"))
    assert evidence_fingerprint(firing(one)) == evidence_fingerprint(firing(two))
    assert evidence_fingerprint(firing(one)) != evidence_fingerprint(
        firing(e2_fact(sources=["Observation/a"]))
    )


def test_a_new_frax_result_gives_another_fingerprint() -> None:
    def bone(frax: str) -> Fact:
        return Fact("bone", {"count": 1}, {"source": "Observation/t", "date": "2026-01-01", "frax": frax})

    old = "hip 3.4 % (2026-01-01, Observation/frax-1)"
    new = "hip 3.4 % (2026-06-01, Observation/frax-2)"
    assert evidence_fingerprint(firing(bone(old))) != evidence_fingerprint(firing(bone(new)))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule_id}/{c.path.stem}" for c in CASES])
def test_fingerprint_does_not_depend_on_the_order_of_bundle_entries(case: Any, registry: Registry) -> None:
    request = roll_dates(case.request, registry.today())
    baseline = rests_on(registry, request)
    for seed in range(4):
        assert rests_on(registry, shuffled(request, seed)) == baseline


def test_fingerprint_is_stable_with_many_results_in_shuffled_bundles(registry: Registry) -> None:
    request = order_sign("fp-many", e2=6.0, e2_days=10, tscore=-1.6)
    for i, (value, days) in enumerate([(30.0, 200), (12.0, 90), (6.0, 10), (40.0, 400)]):
        request["prefetch"]["estradiol"]["entry"].append(
            {"resource": obs(f"e2-{i}", "fp-many", "2243-4", value, "pg/mL", days)}
        )
    for i, code in enumerate(["38267-1", "38265-5", "80948-3"]):
        request["prefetch"]["boneDensity"]["entry"].append(
            {"resource": obs(f"t-{i}", "fp-many", code, -1.6, "{T-score}", 100)}
        )
    request["prefetch"]["boneDensity"]["entry"].append(
        {"resource": obs("frax", "fp-many", "90266-8", 4.0, "%", 100)}
    )
    baseline = rests_on(registry, request)
    assert {"low-estradiol", "osteoporosis-antiresorptive"} <= set(baseline)
    for seed in range(12):
        assert rests_on(registry, shuffled(request, seed)) == baseline


def test_fingerprint_never_carries_the_patient_id(registry: Registry) -> None:
    # The same evidence (same resource ids, values and dates) for two patients.
    assert rests_on(registry, order_sign("fp-one", e2=6.0)) == rests_on(
        registry, order_sign("fp-two", e2=6.0)
    )


# ---- the weekly dose --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("order", "mg_a_week"),
    [
        (draft(1, 2, 1, "wk"), 2.0),
        (draft(0.5, 1, 3, "d"), round(0.5 * 7 / 3, 6)),
        (draft(1, 1, 1, "d"), 7.0),
        (draft(1, 1, 1, "mo"), round(7 / 30.4375, 6)),
        (draft(1, 52, 1, "a"), round(52 * 7 / 365.25, 6)),
        (draft(1, 1, 168, "h"), 1.0),
    ],
)
def test_weekly_dose_is_mg_times_doses_a_week(order: dict[str, Any], mg_a_week: float) -> None:
    assert weekly_dose(order) == mg_a_week


def test_weekly_dose_reads_the_frequency_default_of_one() -> None:
    order = draft(1, 1, 1, "wk")
    del order["dosageInstruction"][0]["timing"]["repeat"]["frequency"]
    assert weekly_dose(order) == 1.0


def test_weekly_dose_takes_the_highest_frequency_a_range_allows() -> None:
    order = draft(1, 1, 1, "wk")
    order["dosageInstruction"][0]["timing"]["repeat"]["frequencyMax"] = 3
    assert weekly_dose(order) == 3.0


def test_concurrent_dosages_add_up_and_sequential_ones_count_their_highest() -> None:
    together = draft(1, 2, 1, "wk")
    together["dosageInstruction"] *= 2
    assert weekly_dose(together) == 4.0
    steps = draft(1, 1, 1, "wk")
    steps["dosageInstruction"] = [
        steps["dosageInstruction"][0] | {"sequence": 1},
        draft(1, 3, 1, "wk")["dosageInstruction"][0] | {"sequence": 2},
    ]
    assert weekly_dose(steps) == 3.0


@pytest.mark.parametrize(
    "broken",
    [
        {"dosageInstruction": []},
        {"dosageInstruction": "1 mg"},
        {"dosageInstruction": ["1 mg"]},
        {},
    ],
)
def test_weekly_dose_of_an_order_without_dosages_is_none(broken: dict[str, Any]) -> None:
    assert weekly_dose({"resourceType": "MedicationRequest", **broken}) is None


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["doseAndRate"][0]["doseQuantity"].update(unit="tablet", code="{tbl}"),
        lambda d: d["doseAndRate"][0]["doseQuantity"].update(value=0),
        lambda d: d["doseAndRate"][0]["doseQuantity"].update(value=True),
        lambda d: d.pop("doseAndRate"),
        lambda d: d["timing"]["repeat"].update(periodUnit="s"),
        lambda d: d["timing"]["repeat"].update(period=0),
        lambda d: d["timing"]["repeat"].update(dayOfWeek=["mon", "thu"]),
        lambda d: d["timing"]["repeat"].update(timeOfDay=["08:00:00"]),
        lambda d: d["timing"].update(event=["2026-11-28"]),
        lambda d: d.pop("timing"),
        lambda d: d.update(asNeededBoolean=True),
        lambda d: d.update(asNeededCodeableConcept={"text": "when needed"}),
    ],
)
def test_weekly_dose_that_cannot_be_read_is_none(change: Any) -> None:
    order = draft()
    change(order["dosageInstruction"][0])
    assert weekly_dose(order) is None


def test_mg_may_be_given_as_unit_or_code_alone() -> None:
    order = draft(1, 2, 1, "wk")
    del order["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["code"]
    assert weekly_dose(order) == 2.0


# ---- the dose a card acts on ------------------------------------------------------------------
def test_a_card_that_acts_on_the_draft_rests_on_its_highest_weekly_dose() -> None:
    assert acted_on_dose(card("update"), [draft(1, 2), draft(1, 3), {"dosageInstruction": []}]) == 3.0
    assert acted_on_dose(card("create", "delete"), [draft(1, 1)]) == 1.0


def test_a_card_that_does_not_act_on_the_draft_rests_on_no_dose() -> None:
    assert acted_on_dose(card("create"), [draft()]) is None


def test_no_readable_draft_dose_is_none() -> None:
    assert acted_on_dose(card("update"), []) is None
    assert acted_on_dose(card("update"), [draft(unit="s")]) is None


def test_the_pipeline_gives_the_dose_to_dose_cards_only(registry: Registry) -> None:
    found = rests_on(registry, order_sign("fp-dose", e2=6.0, dxa_days=900))
    assert found["low-estradiol"][1] == 2.0  # the builders' draft: 1 mg twice weekly
    assert found["baseline-dexa"][1] is None


def test_fingerprint_bytes_are_those_json_wrote_before() -> None:
    # Snoozes compare stored fingerprints: the fast encoder must write what json.dumps wrote.
    rnd = random.Random(3)
    alphabet = [*'aZ09 /.:-_"\\', "\x00", "\x1f", "\n", "\x7f", "é", "µ", "\u2028", "\ud800", "😀"]
    for _ in range(5000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 6)))
        value = ["rule", [["estradiol", "value", text], ["dxa", "source", "Observation/1"]]]
        assert _compact_json(value) == json.dumps(value, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("-2.6", "07253cbfce6204d218176f3918b6a24d35f33b0eafec1cdc2e8ea83599dc4d42"),
        ("T-score −2.6 µ", "d49f6820d511f6aca21f7e2c555a3e393e15d42fec63da0ce8648b442f6ec1cc"),
    ],
)
def test_fingerprints_stored_before_still_match(value: str, stored: str) -> None:
    # Written by the json.dumps encoder of 2026-12-01: a snooze stored then still holds.
    evidence = {"source": "Observation/t", "date": "2024-06-15", "value": value}
    fact = Fact("dxa", {"days_ago": 900}, evidence)
    assert evidence_fingerprint(Firing("baseline-dexa", "v", {"dxa": fact})) == stored
