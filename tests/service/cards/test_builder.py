"""Card building: the safety invariants, draft-order transforms and card metadata."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import re
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from service.cards.builder import CardBuilder
from service.cards.drafts import hold, lower_weekly_dose
from service.engine.adapter import RuleEngine
from service.pipeline.registry import Registry
from service.ruleset.check import SAMPLE_EVIDENCE, alias_kinds
from service.ruleset.loader import load_ruleset
from service.ruleset.model import ActionTemplate, RuleSet, SuggestionTemplate
from service.ruleset.scenarios import load_cases, roll_dates
from service.ruleset.schema import Fact, Firing
from service.settings import PACKAGED_RULES_DIR
from tests.builders import SERVICE_FOR_HOOK, med, order_sign


def cards(registry: Registry, request: dict[str, Any]) -> dict[str, Any]:
    response = asyncio.run(registry.call(SERVICE_FOR_HOOK[request["hook"]], request))
    return {c.source.topic.code: c for c in response.cards if c.source.topic}


def anastrozole_actions(card: Any) -> list[str]:
    return [a.type for s in card.suggestions for a in s.actions if a.type in ("update", "delete")]


@pytest.mark.parametrize("gender", ["female", "unknown", "other", None])
def test_anastrozole_is_never_reduced_or_stopped_unless_male(registry: Registry, gender: str | None) -> None:
    found = cards(registry, order_sign("safe-1", gender=gender, e2=5.0, tscore=-3.1))
    assert "low-estradiol" not in found
    osteoporosis = found["osteoporosis-antiresorptive"]
    assert anastrozole_actions(osteoporosis) == []
    # Aromatase-inhibitor bone loss: denosumab first (SPEC §3), never an anastrozole action.
    assert [s.label for s in osteoporosis.suggestions] == [
        "Denosumab 60 mg SC every 6 months",
        "Zoledronic acid 5 mg IV once a year",
        "Start alendronic acid 70 mg once weekly",
    ]


def test_man_on_testosterone_with_osteoporosis_may_stop_the_draft(registry: Registry) -> None:
    card = cards(registry, order_sign("safe-2", tscore=-3.1))["osteoporosis-antiresorptive"]
    assert anastrozole_actions(card) == ["delete"]
    assert card.suggestions[-1].actions[0].resourceId == "MedicationRequest/draft-ana"
    assert card.selectionBehavior == "at-most-one"


def test_man_not_on_testosterone_never_gets_an_anastrozole_action(registry: Registry) -> None:
    found = cards(registry, order_sign("safe-2b", testosterone=False, tscore=-3.1, e2=5.0))
    assert all(anastrozole_actions(card) == [] for card in found.values())
    assert "anastrozole dose" not in found["low-estradiol"].detail.lower()


def test_unknown_safety_labs_are_offered_as_exactly_those_orders(registry: Registry) -> None:
    card = cards(registry, order_sign("safe-2c", tscore=-3.1, egfr=None))["osteoporosis-antiresorptive"]
    labs = card.suggestions[0]
    assert labs.label == "Order the missing safety labs"
    assert [a.resource["code"]["coding"][0]["code"] for a in labs.actions] == ["2160-0"]
    created = [a.resource for s in card.suggestions for a in s.actions if a.resource is not None]
    assert not any(r["resourceType"] == "MedicationRequest" for r in created)


def test_dose_advice_is_withheld_in_code_whatever_the_rule_files_say(ruleset: RuleSet) -> None:
    variant = next(v for v in ruleset.rule("low-estradiol").variants if v.anastrozole_advice == "dose")
    firing = Firing("low-estradiol", variant.name, {})
    builder = CardBuilder(ruleset, date.today(), docs_base="http://127.0.0.1:8000")
    assert builder.build([firing], patient_id="p", sex="male", drafts=[], on_testosterone=False) == []
    assert builder.build([firing], patient_id="p", sex="female", drafts=[], on_testosterone=True) == []


def test_low_estradiol_update_keeps_the_draft_id(registry: Registry) -> None:
    card = cards(registry, order_sign("safe-3", e2=6.0))["low-estradiol"]
    lower, held = card.suggestions
    assert lower.actions[0].type == "update" and lower.actions[0].resource["id"] == "draft-ana"
    assert lower.actions[0].resource["dosageInstruction"][0]["timing"]["repeat"]["frequency"] == 1
    assert held.actions[0].resource["status"] == "on-hold"
    assert held.actions[0].resource["id"] == "draft-ana"


def test_only_the_anastrozole_draft_is_updated_when_several_drafts(registry: Registry) -> None:
    other = med("draft-lisinopril", "safe-4", "314076", status="draft")
    card = cards(registry, order_sign("safe-4", e2=6.0, extra_drafts=[other]))["low-estradiol"]
    ids = {a.resource["id"] for s in card.suggestions for a in s.actions}
    assert ids == {"draft-ana"}


def test_warning_cards_offer_a_snooze_and_info_cards_do_not(registry: Registry) -> None:
    found = cards(registry, order_sign("safe-5", dxa_days=900, vitd=None))
    assert any(r.code == "snooze-90d" for r in found["baseline-dexa"].overrideReasons)
    assert found["vitamin-d"].overrideReasons == []


def test_evidence_is_in_every_card(registry: Registry) -> None:
    card = cards(registry, order_sign("safe-6", e2=6.0))["low-estradiol"]
    assert "6 pg/mL" in card.summary and "10 pg/mL" in card.summary
    assert "Finkelstein" in card.detail and "protocol" in card.detail
    assert "Observation/e2" in card.detail and "2026.12.0" in card.detail or "rule set" in card.detail


def dosage(frequency: int, period: float, unit: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": "d",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/x"},
        "medicationCodeableConcept": {"text": "anastrozole"},
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": frequency, "period": period, "periodUnit": unit}},
                "doseAndRate": [{"doseQuantity": {"value": 0.5, "unit": "mg"}}],
            }
        ],
    }


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ((2, 1, "wk"), (1, 1, "wk")),  # twice weekly -> once weekly
        ((1, 1, "wk"), (1, 2, "wk")),  # once weekly -> every two weeks
        ((1, 3.5, "d"), (1, 7, "d")),  # every 3.5 days -> every 7 days
        ((1, 1, "d"), (1, 2, "d")),  # daily -> every other day
        ((4, 1, "wk"), (2, 1, "wk")),
    ],
)
def test_lower_weekly_dose_halves_administrations(
    before: tuple[int, float, str], after: tuple[int, float, str]
) -> None:
    updated = lower_weekly_dose(dosage(*before), 0.5)
    assert updated is not None
    repeat = updated["dosageInstruction"][0]["timing"]["repeat"]
    assert (repeat["frequency"], repeat["period"], repeat["periodUnit"]) == after
    assert updated["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 0.5
    assert "reduced from" in updated["dosageInstruction"][0]["text"]


@pytest.mark.parametrize(
    "order",
    [
        {"resourceType": "MedicationRequest", "id": "d"},  # no dosage at all
        {"resourceType": "MedicationRequest", "id": "d", "dosageInstruction": [{"text": "as directed"}]},
        dosage(1, 1, "min"),  # a unit we do not scale
    ],
)
def test_lower_weekly_dose_gives_up_on_unreadable_timing(order: dict[str, Any]) -> None:
    assert lower_weekly_dose(order, 0.5) is None


def test_lower_weekly_dose_does_not_touch_the_original() -> None:
    original = dosage(2, 1, "wk")
    lower_weekly_dose(original, 0.5)
    assert original["dosageInstruction"][0]["timing"]["repeat"]["frequency"] == 2


def test_hold_changes_only_the_status() -> None:
    original = dosage(2, 1, "wk")
    held = hold(original)
    assert held["status"] == "on-hold" and original["status"] == "draft"
    assert {k: v for k, v in held.items() if k != "status"} == {
        k: v for k, v in original.items() if k != "status"
    }


def test_draft_without_readable_dose_still_gets_the_card_and_the_hold(registry: Registry) -> None:
    req = order_sign("safe-7", e2=6.0)
    req["context"]["draftOrders"]["entry"][-1]["resource"]["dosageInstruction"] = [{"text": "as directed"}]
    card = cards(registry, req)["low-estradiol"]
    assert [s.label for s in card.suggestions] == ["Hold anastrozole and recheck estradiol"]


SCENARIOS = load_cases(PACKAGED_RULES_DIR)
# This test's own idea of dose advice, deliberately not the loader's: any sentence that names
# the drug together with one of these words fails, whatever the rule files declare.
ADVICE_WORDS = {
    "dose", "doses", "dosing", "lower", "lowering", "reduce", "reducing", "decrease", "decreasing",
    "hold", "stop", "stopping", "discontinue", "reconsider", "need", "needed", "taper", "halve", "cut",
}  # fmt: skip


def advises_on_anastrozole(text: str) -> bool:
    for sentence in re.split(r"[.;!?\n]", text.lower()):
        words = set(re.findall(r"[a-z]+", sentence))
        if words & {"anastrozole", "arimidex"} and words & ADVICE_WORDS:
            return True
    return False


@pytest.mark.parametrize("gender", ["female", "unknown", None])
def test_no_card_for_a_non_male_patient_reduces_or_questions_anastrozole(
    registry: Registry, gender: str | None
) -> None:
    seen: set[str] = set()
    for case in SCENARIOS:
        request = roll_dates(copy.deepcopy(case.request), date.today())
        patient = request["prefetch"]["patient"]
        patient.pop("gender", None)
        if gender is not None:
            patient["gender"] = gender
        for card in cards(registry, request).values():
            seen.add(str(card.source.topic.code))
            text = " ".join([card.summary, card.detail or "", *(s.label for s in card.suggestions)])
            assert not advises_on_anastrozole(text), f"{case.path}: {card.source.topic.code}"
            assert anastrozole_actions(card) == [], f"{case.path}: {card.source.topic.code}"
    assert {"osteoporosis-antiresorptive", "osteopenia-monitoring", "baseline-dexa"} <= seen


def test_accepting_lower_dose_does_not_bring_the_card_back(registry: Registry) -> None:
    req = order_sign("loop-1", e2=6.0)
    lowered = cards(registry, req)["low-estradiol"].suggestions[0].actions[0].resource
    assert {"system": "urn:osteoguard:action", "code": "dose-lowered"}.items() <= lowered["meta"]["tag"][
        0
    ].items()
    req["context"]["draftOrders"]["entry"][-1]["resource"] = lowered
    assert "low-estradiol" not in cards(registry, req)


def test_accepting_hold_takes_the_draft_out_of_the_call(registry: Registry) -> None:
    req = order_sign("loop-2", e2=6.0)
    held = cards(registry, req)["low-estradiol"].suggestions[1].actions[0].resource
    req["context"]["draftOrders"]["entry"][-1]["resource"] = held
    assert cards(registry, req) == {}


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [
        ("repeat", "dayOfWeek", ["mon", "thu"]),
        ("repeat", "when", ["MORN"]),
        ("repeat", "periodMax", 2),
        ("repeat", "count", 8),
        ("timing", "event", ["2026-12-01"]),
        ("timing", "code", {"text": "BIW"}),
        ("dosage", "asNeededBoolean", True),
        ("dosage", "maxDosePerPeriod", {"numerator": {"value": 2}}),
    ],
)
def test_lower_weekly_dose_refuses_timings_it_cannot_rewrite(where: str, key: str, value: Any) -> None:
    order = dosage(2, 1, "wk")
    target = order["dosageInstruction"][0]
    target = {"dosage": target, "timing": target["timing"], "repeat": target["timing"]["repeat"]}[where]
    target[key] = value
    assert lower_weekly_dose(order, 0.5) is None


@pytest.mark.parametrize(
    "broken",
    [
        {"timing": [1]},
        {"timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": ["wk"]}}},
        {"timing": {"repeat": {"frequency": "2", "period": 1, "periodUnit": "wk"}}},
        {"timing": {"repeat": {"frequency": 2, "period": 1e300, "periodUnit": "wk"}}},
        {"timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "wk"}}, "doseAndRate": 5},
    ],
)
def test_lower_weekly_dose_survives_malformed_dosage(broken: dict[str, Any]) -> None:
    order = dosage(2, 1, "wk")
    order["dosageInstruction"] = [broken]
    result = lower_weekly_dose(order, 0.5)
    assert result is None or result["dosageInstruction"][0]["timing"]["repeat"]["frequency"] == 1


def test_patient_instruction_is_rewritten_with_the_new_schedule() -> None:
    order = dosage(2, 1, "wk")
    order["dosageInstruction"][0]["patientInstruction"] = "Take every Monday and Thursday"
    updated = lower_weekly_dose(order, 0.5)
    assert updated is not None
    assert updated["dosageInstruction"][0]["patientInstruction"] == "Take 0.5 mg once weekly."


def test_client_text_cannot_inject_markdown_into_the_detail(registry: Registry) -> None:
    req = order_sign("md-1", e2=6.0)
    e2 = req["prefetch"]["estradiol"]["entry"][0]["resource"]
    e2["id"] = "x"
    e2["code"]["text"] = "[Sign now](http://evil.example) <img src=x onerror=alert(1)>"
    req["prefetch"]["boneDensity"]["entry"][0]["resource"]["code"]["text"] = "# Heading\n**bold**"
    for card in cards(registry, req).values():
        assert "](http" not in card.detail and "<img" not in card.detail and "\n# Heading" not in card.detail


def test_displayed_values_never_cross_the_threshold(registry: Registry) -> None:
    card = cards(registry, order_sign("disp-1", e2=9.9996))["low-estradiol"]
    assert "9.999 pg/mL" in card.summary and "below 10 pg/mL" in card.summary
    low_mass = cards(registry, order_sign("disp-2", tscore=-2.4996))["osteopenia-monitoring"]
    assert "-2.499" in low_mass.summary


def test_a_draft_that_is_not_valid_r4_gets_no_update_suggestions(registry: Registry) -> None:
    request = order_sign("invalid-draft", e2=6.0)
    draft = request["context"]["draftOrders"]["entry"][0]["resource"]
    draft["authoredOn"] = "yesterday"  # not a FHIR dateTime; the rules never read it
    card = cards(registry, request)["low-estradiol"]
    assert anastrozole_actions(card) == []


def test_each_draft_is_validated_once_per_call(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    import service.cards.builder as cards_module

    seen: list[str] = []
    real = cards_module.is_valid_fhir

    def counting(resource: dict[str, Any]) -> bool:
        seen.append(str(resource.get("id")))
        return real(resource)

    monkeypatch.setattr(cards_module, "is_valid_fhir", counting)
    card = cards(registry, order_sign("once", e2=6.0))["low-estradiol"]
    assert sorted(anastrozole_actions(card)) == ["update", "update"]  # lower the dose, and hold
    assert seen == ["draft-ana"]


def suggestion_labels(card: Any) -> list[str]:
    return [s.label for s in card.suggestions]


def test_an_invalid_draft_still_gets_the_updates_that_repair_it(registry: Registry) -> None:
    # The public sandbox sends drafts without a status: hold sets one, so it is valid R4;
    # the lowered dose keeps the gap, so it is not offered.
    request = order_sign("no-status", e2=6.0)
    del request["context"]["draftOrders"]["entry"][0]["resource"]["status"]
    card = cards(registry, request)["low-estradiol"]
    assert anastrozole_actions(card) == ["update"]
    assert [a.resource["status"] for s in card.suggestions for a in s.actions] == ["on-hold"]


def test_a_draft_with_a_malformed_meta_gets_the_dose_change_that_replaces_it(registry: Registry) -> None:
    request = order_sign("bad-meta", e2=6.0)
    request["context"]["draftOrders"]["entry"][0]["resource"]["meta"] = "x"
    card = cards(registry, request)["low-estradiol"]
    assert anastrozole_actions(card) == ["update"]
    (action,) = [a for s in card.suggestions for a in s.actions]
    assert action.resource["meta"]["tag"][0]["code"] == "dose-lowered"


@pytest.mark.parametrize("factor", [5e-324, 1e-6])
def test_a_vanishing_dose_factor_offers_no_schedule(factor: float) -> None:
    assert lower_weekly_dose(med("d", "p", status="draft"), factor) is None


# ---- links and source.url (SPEC §4) -------------------------------------------------------------
def test_every_card_links_to_its_rules_main_sources(registry: Registry) -> None:
    found = cards(registry, order_sign("links-1", e2=6.0, tscore=-3.1, dxa_days=900, vitd=None))
    assert len(found) >= 4
    for rule_id, card in found.items():
        rule = registry.ruleset.rule(rule_id)
        assert [(link.label, link.url, link.type) for link in card.links] == [
            (source.label, source.url, "absolute") for source in rule.links
        ]


def test_source_url_is_the_rules_page_below_the_registrys_docs_base(
    ruleset: RuleSet, engine: RuleEngine
) -> None:
    registry = Registry(ruleset, engine, docs_base="https://bone.example.org/og/")
    card = cards(registry, order_sign("links-2", e2=6.0))["low-estradiol"]
    assert card.source.url == "https://bone.example.org/og/docs/rules/low-estradiol"


def test_source_url_defaults_to_the_local_service(registry: Registry) -> None:
    card = cards(registry, order_sign("links-3", e2=6.0))["low-estradiol"]
    assert card.source.url == "http://127.0.0.1:8000/docs/rules/low-estradiol"


def test_a_call_may_name_its_own_docs_base(registry: Registry) -> None:
    request = order_sign("links-4", e2=6.0)
    response = asyncio.run(
        registry.call(SERVICE_FOR_HOOK["order-sign"], request, docs_base="https://a.example")
    )
    assert {c.source.url for c in response.cards} >= {"https://a.example/docs/rules/low-estradiol"}


def test_a_variant_with_its_own_links_gives_them_instead_of_the_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(PACKAGED_RULES_DIR, rules, ignore=shutil.ignore_patterns("cases"))
    path = rules / "monitoring/osteopenia-monitoring/rule.yaml"
    hadji = "https://doi.org/10.1016/j.jbo.2017.03.001"
    text = path.read_text().replace(
        "  low-bone-mass:\n",
        f'  low-bone-mass:\n    links:\n      - {{label: "Hadji P et al.", url: "{hadji}"}}\n',
    )
    path.write_text(text)
    ruleset = load_ruleset(rules)
    engine = RuleEngine(ruleset)
    try:
        registry = Registry(ruleset, engine)
        woman = cards(registry, order_sign("links-5", gender="female", tscore=-1.8))["osteopenia-monitoring"]
        man = cards(registry, order_sign("links-6", tscore=-1.8))["osteopenia-monitoring"]
    finally:
        engine.close()
    assert [link.url for link in woman.links] == [hadji]
    assert [link.url for link in man.links] == [s.url for s in ruleset.rule("osteopenia-monitoring").links]


def sample_firing(variant: Any) -> Firing:
    matched = {a: Fact(k, {}, SAMPLE_EVIDENCE[k]) for a, k in alias_kinds(variant.conditions).items()}
    return Firing("vitamin-d", variant.name, matched)


def test_undeclared_anastrozole_text_is_withheld_in_code(ruleset: RuleSet) -> None:
    rule = ruleset.rule("vitamin-d")
    variant = dataclasses.replace(rule.variants[0], summary="Stop the anastrozole now")
    patched = dataclasses.replace(ruleset, rules=(dataclasses.replace(rule, variants=(variant,)),))
    builder = CardBuilder(patched, date.today(), docs_base="http://127.0.0.1:8000")
    assert builder.build([sample_firing(variant)], patient_id="p", sex="female", drafts=[]) == []


def test_a_new_anastrozole_order_is_never_offered_without_dose_advice(ruleset: RuleSet) -> None:
    rule = ruleset.rule("vitamin-d")
    order = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "{patient_ref}"},
        "medicationCodeableConcept": {"text": "anastrozole 0.5 mg"},
    }
    template = SuggestionTemplate("Order 25-OH vitamin D", (ActionTemplate("create", "a new order", order),))
    variant = dataclasses.replace(rule.variants[1], suggestions=(template,))
    patched = dataclasses.replace(ruleset, rules=(dataclasses.replace(rule, variants=(variant,)),))
    builder = CardBuilder(patched, date.today(), docs_base="http://127.0.0.1:8000")
    (card,) = builder.build([sample_firing(variant)], patient_id="p", sex="female", drafts=[])
    assert card.suggestions == []
