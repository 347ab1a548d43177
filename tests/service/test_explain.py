"""``osteoguard explain``: the explanation reads the conditions the engine ran, and agrees with it.

The agreement test is the guarantee: for every scenario case, the evaluator's verdict on every
variant of every rule equals the engine's firing in the same call, and the rules it says fire
are the cards the call returned (and what the case expects).
"""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path

import pytest

from service.cli import main
from service.explain import Check, Explanation, check
from service.pipeline.registry import Registry
from service.ruleset.scenarios import Case, load_cases, run_case
from service.settings import PACKAGED_RULES_DIR

CASES = load_cases(PACKAGED_RULES_DIR)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BMD_EXAMPLE = str(EXAMPLES / "order-sign-man-bmd-decline.json")


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule_id}/{c.path.stem}" for c in CASES])
def test_the_explanation_agrees_with_the_engine_on_every_case(case: Case, registry: Registry) -> None:
    explanation = Explanation("", "", registry.today(), registry.ruleset.version)
    outcome = asyncio.run(run_case(case, registry, explanation.observe))
    assert outcome.ok, outcome.problems
    if not explanation.facts:  # not about anastrozole, or deceased: no rule ran, no card
        assert outcome.fired == [] and not case.expect
        return
    assert explanation.disagreements() == []
    said = {r.id for r in explanation.rules if any(v.fires for v in r.variants)}
    assert set(outcome.fired) <= said
    assert set(case.expect) <= said
    assert not set(case.forbid) & said


def test_nearly_every_case_runs_the_rules(registry: Registry) -> None:
    ran = 0
    for case in CASES:
        explanation = Explanation("", "", registry.today(), registry.ruleset.version)
        asyncio.run(run_case(case, registry, explanation.observe))
        ran += bool(explanation.facts)
    assert ran >= len(CASES) - 5  # 3 today: order-select with anastrozole unselected, and the like


def test_every_variant_is_explained_once(registry: Registry) -> None:
    explanation = Explanation("", "", registry.today(), registry.ruleset.version)
    asyncio.run(run_case(CASES[0], registry, explanation.observe))
    names = [(r.id, v.name) for r in explanation.rules for v in r.variants]
    assert names == [(r.id, v.name) for r in registry.ruleset.rules for v in r.variants]


@pytest.mark.parametrize(
    ("expr", "fields", "holds"),
    [
        ({"sex": "male"}, {"sex": "male"}, True),
        ({"sex": "male"}, {}, False),
        ({"$neq": {"sex": "male"}}, {"sex": "female"}, True),
        ({"$neq": {"sex": "male"}}, {}, False),  # a missing field fails $neq too, as in the engine
        ({"$lt": {"value": 10}}, {"value": 9.99}, True),
        ({"$lte": {"value": 10}}, {"value": 10}, True),
        ({"$gt": {"value": 10}}, {"value": 10}, False),
        ({"$gte": {"value": 10}}, {"value": 10.0}, True),
        ({"$lt": {"value": 10}}, {}, False),
        ({"$lt": {"value": 10}}, {"value": "x"}, False),
        ({"$ex": {"value": 1}}, {"value": 0}, True),
        ({"$nex": {"value": 1}}, {}, True),
        ({"$or": [{"a": 1}, {"b": 1}]}, {"b": 1}, True),
        ({"$and": [{"a": 1}, {"b": 1}]}, {"b": 1}, False),
    ],
)
def test_the_condition_language(expr: dict[str, object], fields: dict[str, object], holds: bool) -> None:
    assert check(expr, fields).holds is holds


def test_a_check_says_what_it_tested_and_what_the_fact_held() -> None:
    found = check({"$and": [{"kind": "bone"}, {"$lte": {"tscore": -2.5}}]}, {"kind": "bone", "tscore": -1.7})
    assert found == Check(
        "all of",
        False,
        parts=(Check('kind = "bone"', True, "kind", "bone"), Check("tscore <= -2.5", False, "tscore", -1.7)),
    )


def test_explain_shows_facts_with_their_sources_conditions_and_cards(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["explain", BMD_EXAMPLE, "--today", "2026-11-28", "--rule", "bmd-decline"]) == 0
    out = capsys.readouterr().out
    assert "Rule bmd-decline: FIRED (variant male-on-testosterone-spine)" in out
    assert "from: Observation/bmd-new, Observation/bmd-old" in out
    assert "true  loss_pct >= 5.3  (fact: 7)" in out
    assert 'false site = "hip"  (fact: "lumbar-spine")' in out
    assert "[info] bmd-decline: Lumbar spine BMD 1.000 g/cm² to 0.930 g/cm² (-7.0 %)" in out
    assert "Rule vitamin-d" not in out


def test_explain_json_is_for_tools(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", BMD_EXAMPLE, "--today", "2026-11-28", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    rules = {r["id"]: r for r in body["rules"]}
    assert rules["bmd-decline"]["fired"] and not rules["osteoporosis-antiresorptive"]["fired"]
    assert all(v["fires"] == v["engine_fired"] for r in body["rules"] for v in r["variants"])
    assert body["facts"][0]["sources"][0] == "Patient/pat-bmd-1"
    assert [c["source"]["topic"]["code"] for c in body["cards"]] == ["bmd-decline", "testosterone-monitoring"]


def test_explain_without_anastrozole_says_no_rule_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = json.loads(Path(BMD_EXAMPLE).read_text(encoding="utf-8"))
    payload["context"]["draftOrders"]["entry"] = []
    path = tmp_path / "no-anastrozole.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    assert main(["explain", str(path), "--today", "2026-11-28"]) == 0
    out = capsys.readouterr().out
    assert "No rule was evaluated" in out and "  none" in out


@pytest.mark.parametrize("args", [["--rule", "no-such-rule"], []])
def test_explain_bad_input_exits_2(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json" if not args else "{}", encoding="utf-8")
    assert main(["explain", str(path), *args]) == 2
    assert "osteoguard explain:" in capsys.readouterr().err


def test_explain_of_a_missing_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "/nonexistent/request.json"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_rules_test_explain_shows_a_failing_case_without_patient_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    rules = tmp_path / "rules"
    shutil.copytree(PACKAGED_RULES_DIR, rules)
    rule = rules / "monitoring" / "bmd-decline" / "rule.yaml"
    # A stricter lumbar-spine LSC than the case's 7 % loss: the firing case now fails.
    rule.write_text(
        rule.read_text(encoding="utf-8").replace("lsc_lumbar_spine_pct: 5.3", "lsc_lumbar_spine_pct: 8"),
        encoding="utf-8",
    )
    assert main(["rules", "test", str(rules), "--explain"]) == 1
    out = capsys.readouterr().out
    assert "FAIL bmd-decline/fires-spine-same-device" in out
    assert "|   variant male-on-testosterone-spine: does not fire" in out
    assert "| " in out and "false loss_pct >= 8  (fact: 7)" in out
    failing = out[out.index("FAIL bmd-decline/fires-spine-same-device") :]
    failing = failing[: failing.index("\nPASS") if "\nPASS" in failing else len(failing)]
    assert "Patient/" not in failing and "Observation/" not in failing and "bmd-1" not in failing
    assert "Rule vitamin-d" not in failing


def test_explain_today_is_the_day_given() -> None:
    explanation = Explanation("s", "order-sign", date(2026, 11, 28), "x 1")
    assert explanation.render().startswith("s (order-sign), as of 2026-11-28, rule set x 1")


def test_a_disagreement_with_the_engine_would_be_shown() -> None:
    from service.explain import AliasView, RuleView, VariantView

    explanation = Explanation("s", "order-sign", date(2026, 11, 28), "x 1")
    explanation.rules = [
        RuleView("r", "R", (VariantView("v", True, False, (AliasView("a", "bone", True, ()),)),))
    ]
    assert explanation.disagreements() == ["r/v"]
    text = explanation.render()
    assert "variant v: fires (but the engine did not fire it)" in text
    assert "no bone fact was asserted" in text
    assert explanation.as_json(identifying=False)["cards"] == []
