"""Rules are data: a file edit changes behaviour with no code change; broken files say file:line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.engine.adapter import RuleEngine
from service.errors import RuleSetError
from service.pipeline.registry import Registry
from service.ruleset.loader import load_ruleset
from tests.builders import SERVICE_FOR_HOOK, order_sign


def fired_with(rules_dir: Path, request: dict) -> list[str]:  # type: ignore[type-arg]
    ruleset = load_ruleset(rules_dir)
    engine = RuleEngine(ruleset)
    try:
        response = asyncio.run(Registry(ruleset, engine).call(SERVICE_FOR_HOOK[request["hook"]], request))
    finally:
        engine.close()
    return [c.source.topic.code for c in response.cards if c.source.topic]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_changing_the_estradiol_threshold_in_the_file_changes_the_answer(rules_copy: Path) -> None:
    request = order_sign("data-1", e2=11.0)
    assert "low-estradiol" not in fired_with(rules_copy, request)
    edit(rules_copy / "dosing/low-estradiol/rule.yaml", "e2_low_pg_ml: 10 ", "e2_low_pg_ml: 12 ")
    assert "low-estradiol" in fired_with(rules_copy, request)


def test_changing_a_shared_t_score_threshold_changes_two_rules(rules_copy: Path) -> None:
    request = order_sign("data-2", tscore=-2.3)
    assert fired_with(rules_copy, request).count("osteopenia-monitoring") == 1
    edit(rules_copy / "ruleset.yaml", "tscore_osteoporosis: -2.5", "tscore_osteoporosis: -2.0")
    fired = fired_with(rules_copy, request)
    assert "osteoporosis-antiresorptive" in fired and "osteopenia-monitoring" not in fired


def test_adding_a_code_to_a_value_set_is_a_file_edit(rules_copy: Path) -> None:
    request = order_sign("data-3", testosterone=False, e2=7.0)
    request["prefetch"]["medications"]["entry"] = [
        {
            "resource": {
                "resourceType": "MedicationRequest",
                "id": "t",
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {
                    "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "999999"}]
                },
            }
        }
    ]
    request["prefetch"]["testosterone"] = {"resourceType": "Bundle", "type": "searchset"}
    assert "testosterone-monitoring" not in fired_with(rules_copy, request)  # not known as testosterone
    edit(
        rules_copy / "classes/testosterone.yaml",
        '      - {rxcui: "835829",',
        '      - {rxcui: "999999", tty: SCD, display: "new testosterone"}\n      - {rxcui: "835829",',
    )
    assert "testosterone-monitoring" in fired_with(rules_copy, request)


def test_lookback_window_is_read_from_the_file(rules_copy: Path) -> None:
    request = order_sign("data-4", dxa_days=400)
    assert "baseline-dexa" not in fired_with(rules_copy, request)
    edit(rules_copy / "monitoring/baseline-dexa/rule.yaml", "window_days: 730", "window_days: 365")
    assert "baseline-dexa" in fired_with(rules_copy, request)


def test_card_text_is_read_from_the_file(rules_copy: Path) -> None:
    edit(
        rules_copy / "dosing/low-estradiol/rule.yaml",
        'summary: "Estradiol {e2.text}',
        'summary: "E2 {e2.text}',
    )
    ruleset = load_ruleset(rules_copy)
    assert ruleset.rule("low-estradiol").variants[0].summary.startswith("E2 {e2.text}")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("- e2: &low_e2\n", "- e2$not: &low_e2\n", "$not"),
        ("{$lte: {days_ago: $window_days}}", "{$lte: {days_since: $window_days}}", "no field 'days_since'"),
        ("{$lte: {days_ago: $window_days}}", "{$lte: {days_ago: $window_dayz}}", "unknown parameter"),
        ("indicator: warning", "indicator: urgent", "indicator must be one of"),
        ("{sex: male}", "{sex: men}", "sex is one of"),
        ("{kind: estradiol}", "{kind: estrogen}", "unknown fact kind"),
        ("{e2.text} on {e2.date}", "{e3.text} on {e2.date}", "not an alias"),
        ("e2_low_pg_ml: 10 ", "e2_low_pg_ml: ten ", "must be a number"),
    ],
)
def test_broken_rule_files_are_refused_with_file_and_line(
    rules_copy: Path, old: str, new: str, message: str
) -> None:
    path = rules_copy / "dosing/low-estradiol/rule.yaml"
    edit(path, old, new)
    with pytest.raises(RuleSetError) as info:
        load_ruleset(rules_copy)
    problem = next(p for p in info.value.problems if message in p)
    file_part, line, _ = problem.split(":", 2)
    assert file_part == str(path) and int(line) > 1


def test_invalid_yaml_reports_its_line(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/vitamin-d/rule.yaml"
    path.write_text(path.read_text() + "\nbroken: [unclosed\n")
    with pytest.raises(RuleSetError) as info:
        load_ruleset(rules_copy)
    assert any(p.startswith(f"{path}:") and "invalid YAML" in p for p in info.value.problems)


def test_rule_id_comes_from_the_folder_name(rules_copy: Path) -> None:
    (rules_copy / "monitoring/vitamin-d").rename(rules_copy / "monitoring/vitamin-d-check")
    edit(rules_copy / "ruleset.yaml", "  - monitoring/vitamin-d\n", "  - monitoring/vitamin-d-check\n")
    assert "vitamin-d-check" in [r.id for r in load_ruleset(rules_copy).rules]


def test_an_empty_rules_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuleSetError):
        load_ruleset(tmp_path)


def test_text_questioning_anastrozole_must_be_in_a_male_only_variant(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/osteopenia-monitoring/rule.yaml"
    edit(
        path,
        "**Suggestion**: repeat the DXA in 1–2 years.\n",
        "**Suggestion**: repeat the DXA in 1–2 years and decrease the anastrozole.\n",
    )
    with pytest.raises(RuleSetError) as info:
        load_ruleset(rules_copy)
    assert any(p.startswith(f"{path}:") and "anastrozole_advice" in p for p in info.value.problems)


def test_declaring_anastrozole_advice_outside_a_male_only_variant_is_refused(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/osteopenia-monitoring/rule.yaml"
    edit(path, "  not-male:\n", "  not-male:\n    anastrozole_advice: indication\n")
    with pytest.raises(RuleSetError) as info:
        load_ruleset(rules_copy)
    assert any(p.startswith(f"{path}:") and "requires {sex: male}" in p for p in info.value.problems)


def test_dose_advice_for_a_man_not_on_testosterone_is_refused(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/osteopenia-monitoring/rule.yaml"
    edit(path, "  male:\n    conditions:", "  male:\n    anastrozole_advice: dose\n    conditions:")
    with pytest.raises(RuleSetError) as info:
        load_ruleset(rules_copy)
    assert any(p.startswith(f"{path}:") and "{on_testosterone: 1}" in p for p in info.value.problems)


def test_a_rule_file_cut_short_at_a_line_break_is_refused(rules_copy: Path) -> None:
    # Cut before the women's "stale" variant: it still parses, and has every required key.
    path = rules_copy / "monitoring/baseline-dexa/rule.yaml"
    text = path.read_text()
    path.write_text(text[: text.index("  stale:\n")])
    with pytest.raises(RuleSetError) as info:
        load_ruleset(rules_copy)
    assert info.value.problems == [
        f"{path}:90: the file does not end with the line '...' (YAML's document end): "
        "cut short, or still being written?"
    ]


def test_a_rule_file_cut_short_mid_line_is_refused(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/baseline-dexa/rule.yaml"
    text = path.read_text()
    path.write_text(text[: text.index("  stale:\n") + 5])
    with pytest.raises(RuleSetError) as info:
        load_ruleset(rules_copy)
    assert info.value.problems == [f"{path}:91: the file does not end with a line break (cut short?)"]


def test_a_ruleset_file_cut_short_is_refused(rules_copy: Path) -> None:
    path = rules_copy / "ruleset.yaml"
    text = path.read_text()
    path.write_text(text[: text.index("units:\n")])
    with pytest.raises(RuleSetError) as info:
        load_ruleset(rules_copy)
    assert any(
        p.startswith(f"{path}:") and "does not end with the line '...'" in p for p in info.value.problems
    )


def test_a_rule_file_without_its_required_keys_is_refused(rules_copy: Path) -> None:
    path = rules_copy / "dosing/low-estradiol/rule.yaml"
    text = path.read_text()
    path.write_text(text[: text.index("variants:\n")] + "...\n")
    with pytest.raises(RuleSetError) as info:
        load_ruleset(rules_copy)
    assert (
        f"{path}:1: missing 'variants': a rule file needs title, when, then, indicator, links, variants"
        in (info.value.problems)
    )
