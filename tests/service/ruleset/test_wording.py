"""The vocabulary check: no word of this project's own in text a clinician reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.ruleset.check import check
from service.ruleset.loader import load_ruleset
from service.ruleset.model import RuleSet
from service.ruleset.wording import check_wording
from service.settings import PACKAGED_RULES_DIR


@pytest.fixture
def rules_copy(mounted_rules: Path) -> Path:
    return mounted_rules  # no cases: these tests read the rule files only


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def wording_problems(rules_dir: Path) -> list[str]:
    return check_wording(load_ruleset(rules_dir))


def line_of(problem: str) -> int:
    return int(problem.split(":")[1])


def test_the_packaged_rules_pass_with_their_word_list(ruleset: RuleSet) -> None:
    assert {w.phrase for w in ruleset.forbidden_words} >= {"seed", "SPEC", "issue"}
    assert wording_problems(PACKAGED_RULES_DIR) == []


def test_rules_check_reports_the_words(tmp_path: Path) -> None:
    target = tmp_path / "rules"
    shutil.copytree(PACKAGED_RULES_DIR, target)
    edit(
        target / "monitoring/vitamin-d/rule.yaml",
        "(Osteoguard default protocol (configurable))",
        "(seed table)",
    )
    _, problems = check(target)
    assert problems and all("forbidden_card_words" in p for p in problems)


def test_each_use_is_reported_at_its_line(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/vitamin-d/rule.yaml"
    text = path.read_text().replace("(Osteoguard default protocol (configurable))", "(seed table)")
    path.write_text(text)
    cited = [n for n, line in enumerate(text.splitlines(), 1) if "(seed table)" in line]
    problems = [p for p in wording_problems(rules_copy) if p.startswith(str(path))]
    assert cited and sorted(line_of(p) for p in problems) == cited
    assert all("detail uses 'seed'" in p for p in problems)


def test_comments_are_not_card_text(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/vitamin-d/rule.yaml"
    edit(path, "params:\n", "params:\n  # from the seed table\n")
    lines = path.read_text().splitlines()
    comment = next(n for n, line in enumerate(lines, 1) if "# from the seed table" in line)
    assert comment not in [line_of(p) for p in wording_problems(rules_copy) if p.startswith(str(path))]


def test_a_word_in_a_summary_is_reported(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/vitamin-d/rule.yaml"
    edit(
        path,
        'summary: &never_summary "No 25-OH vitamin D result on record;',
        'summary: &never_summary "No 25-OH vitamin D result (see SPEC);',
    )
    (problem,) = [p for p in wording_problems(rules_copy) if "'SPEC'" in p]
    assert (
        'summary: &never_summary "No 25-OH vitamin D result (see SPEC);'
        in path.read_text().splitlines()[line_of(problem) - 1]
    )
    assert "summary uses 'SPEC'" in problem


def test_suggestion_labels_and_action_descriptions_are_checked(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/vitamin-d/rule.yaml"
    edit(
        path, "- label: Order 25-OH vitamin D, total", "- label: Order 25-OH vitamin D, total (see issue 12)"
    )
    edit(path, 'description: "Order 25-hydroxyvitamin D2+D3, serum"', 'description: "Order per spec"')
    problems = wording_problems(rules_copy)
    assert any("label uses 'issue'" in p for p in problems)
    assert any("description uses 'SPEC'" in p for p in problems)


def test_the_title_and_the_page_texts_are_checked(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/vitamin-d/rule.yaml"
    edit(path, "title: 25-OH vitamin D on anastrozole", "title: 25-OH vitamin D (seed rule)")
    edit(path, "  Inform: suggest a total", "  Inform (Osteoguard protocol): suggest a total")
    problems = wording_problems(rules_copy)
    assert any("title uses 'seed'" in p and line_of(p) == 1 for p in problems)
    assert any("then uses 'Osteoguard protocol'" in p for p in problems)


def test_whole_words_only(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/vitamin-d/rule.yaml"
    edit(
        path,
        "**Suggestion**: order total 25-OH",
        "**Suggestion**: order (result issued, seeded, specific) total 25-OH",
    )
    assert not [p for p in wording_problems(rules_copy) if "'issue'" in p or "'SPEC'" in p]


def test_a_phrase_split_over_lines_is_found(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/vitamin-d/rule.yaml"
    edit(
        path,
        "**Suggestion**: order total 25-OH vitamin D (LOINC 62292-8).",
        "per the Osteoguard\n      protocol.",
    )
    (problem,) = [p for p in wording_problems(rules_copy) if "'Osteoguard protocol'" in p]
    assert "per the Osteoguard" in path.read_text().splitlines()[line_of(problem) - 1]


def test_the_allowed_phrase_is_not_reported(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/vitamin-d/rule.yaml"
    assert "(Osteoguard default protocol (configurable))" in path.read_text()
    assert not [p for p in wording_problems(rules_copy) if "protocol" in p]


def test_the_phrase_without_its_allowed_form_is_reported(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/vitamin-d/rule.yaml"
    edit(path, "(Osteoguard default protocol (configurable))", "(Osteoguard default protocol)")
    assert [p for p in wording_problems(rules_copy) if "'Osteoguard default protocol'" in p]


def test_rule_set_is_forbidden_in_a_summary_only(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/vitamin-d/rule.yaml"
    edit(
        path,
        "**Suggestion**: order total 25-OH",
        "**Suggestion**: (rule set {ruleset.version}) order total 25-OH",
    )
    assert not [p for p in wording_problems(rules_copy) if "'rule set'" in p]
    edit(
        path,
        'summary: &never_summary "No 25-OH vitamin D result on record;',
        'summary: &never_summary "Rule set: no 25-OH vitamin D result;',
    )
    assert [p for p in wording_problems(rules_copy) if "summary uses 'rule set'" in p]


def test_a_text_shared_through_an_anchor_is_reported_once(rules_copy: Path) -> None:
    path = rules_copy / "treatment/osteoporosis-antiresorptive/rule.yaml"
    edit(path, 'ok: &sum_ok "DXA T-score', 'ok: &sum_ok "Seed: DXA T-score')
    assert len([p for p in wording_problems(rules_copy) if p.startswith(str(path))]) == 1


def test_fhir_resource_templates_are_not_card_text(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/vitamin-d/rule.yaml"
    edit(path, "text: 25-OH vitamin D, total", "text: 25-OH vitamin D, total\n          description: seed")
    assert not [p for p in wording_problems(rules_copy) if "description uses" in p]
