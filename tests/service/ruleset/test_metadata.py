"""What the rule files say for clinicians: links to the main sources, the parameters a rule's
page lists, and the forbidden-word list, each refused with file:line when it is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import RuleSetError
from service.ruleset.loader import load_ruleset
from service.ruleset.metadata import https_url
from service.ruleset.model import CLINICIAN_TEXT, ForbiddenWord, RuleSet, SourceLink

FINKELSTEIN_URL = "https://pubmed.ncbi.nlm.nih.gov/26901812/"


@pytest.fixture
def rules_copy(mounted_rules: Path) -> Path:
    return mounted_rules  # no cases: these tests read the rule files only


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def problems_of(rules_dir: Path) -> list[str]:
    with pytest.raises(RuleSetError) as info:
        load_ruleset(rules_dir)
    return info.value.problems


def problem_line(problems: list[str], path: Path, message: str) -> int:
    problem = next(p for p in problems if p.startswith(f"{path}:") and message in p)
    return int(problem.split(":")[1])


# ---- links ----------------------------------------------------------------------------------------
def test_every_packaged_rule_has_https_links(ruleset: RuleSet) -> None:
    for rule in ruleset.rules:
        assert rule.links, rule.id
        assert all(https_url(link.url) and link.label for link in rule.links), rule.id


def test_links_are_read_from_the_rule_file(ruleset: RuleSet) -> None:
    (link,) = ruleset.rule("low-estradiol").links
    assert link.url == FINKELSTEIN_URL and "Finkelstein JS" in link.label


@pytest.mark.parametrize(
    ("new_url", "reason"),
    [
        ("http://pubmed.ncbi.nlm.nih.gov/26901812/", "plain http"),
        ("pubmed.ncbi.nlm.nih.gov/26901812/", "no scheme"),
        ("/docs/26901812", "relative"),
        ("https://", "no host"),
        ("https://user:secret@pubmed.ncbi.nlm.nih.gov/26901812/", "credentials"),
        ('"https://pubmed.ncbi.nlm.nih.gov/269 01812/"', "a space"),
        ("https://pubmed.ncbi.nlm.nih.gov:99999/26901812/", "a bad port"),
        ("12345", "not text"),
    ],
)
def test_a_link_url_that_is_not_absolute_https_is_refused_at_its_line(
    rules_copy: Path, new_url: str, reason: str
) -> None:
    path = rules_copy / "dosing/low-estradiol/rule.yaml"
    edit(path, f"url: {FINKELSTEIN_URL}", f"url: {new_url}")
    line = problem_line(problems_of(rules_copy), path, "absolute https URL")
    assert path.read_text().splitlines()[line - 1].strip().startswith("url:"), reason


@pytest.mark.parametrize("label", ['""', '"   "', "[a, list]"])
def test_a_link_without_a_label_is_refused_at_its_line(rules_copy: Path, label: str) -> None:
    path = rules_copy / "dosing/low-estradiol/rule.yaml"
    edit(path, '- label: "Gonadal', f'- label: {label}\n    old: "Gonadal')
    line = problem_line(problems_of(rules_copy), path, "needs a label")
    assert path.read_text().splitlines()[line - 1].strip().startswith("- label:")


def test_a_rule_without_links_is_refused(rules_copy: Path) -> None:
    path = rules_copy / "dosing/low-estradiol/rule.yaml"
    text = path.read_text()
    start = text.index("links:")
    path.write_text(text[:start] + text[text.index("params:") :])
    assert problem_line(problems_of(rules_copy), path, "links must list the card's main sources") >= 1


def test_an_empty_links_list_is_refused_at_its_line(rules_copy: Path) -> None:
    path = rules_copy / "dosing/low-estradiol/rule.yaml"
    text = path.read_text()
    start, end = text.index("links:"), text.index("params:")
    path.write_text(text[:start] + "links: []\n\n" + text[end:])
    line = problem_line(problems_of(rules_copy), path, "links must list")
    assert path.read_text().splitlines()[line - 1].startswith("links:")


def test_a_link_that_is_not_a_mapping_is_refused(rules_copy: Path) -> None:
    path = rules_copy / "dosing/low-estradiol/rule.yaml"
    edit(path, "links:\n", "links:\n  - just a name\n")
    assert problem_line(problems_of(rules_copy), path, "a link is a mapping") > 1


def test_a_misspelt_link_field_is_refused(rules_copy: Path) -> None:
    path = rules_copy / "dosing/low-estradiol/rule.yaml"
    edit(path, f"    url: {FINKELSTEIN_URL}", f"    url: {FINKELSTEIN_URL}\n    lable: typo")
    assert problem_line(problems_of(rules_copy), path, "unknown link field(s) ['lable']") > 1


def test_a_variant_may_give_its_own_links(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/osteopenia-monitoring/rule.yaml"
    edit(
        path,
        "  male:\n",
        '  male:\n    links:\n      - {label: "Hadji P et al.", url: "https://doi.org/10.1016/j.jbo.2017.03.001"}\n',
    )
    rule = load_ruleset(rules_copy).rule("osteopenia-monitoring")
    variant = next(v for v in rule.variants if v.name == "male")
    assert variant.links == (SourceLink("Hadji P et al.", "https://doi.org/10.1016/j.jbo.2017.03.001"),)
    assert next(v for v in rule.variants if v.name == "male-on-testosterone").links == ()


def test_a_variant_link_is_validated_at_its_line(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/osteopenia-monitoring/rule.yaml"
    edit(
        path,
        "  male:\n",
        "  male:\n    links:\n      - {label: Hadji, url: ftp://x.org/a}\n",
    )
    line = problem_line(problems_of(rules_copy), path, "absolute https URL")
    assert "ftp://x.org/a" in path.read_text().splitlines()[line - 1]


# ---- the parameters a rule's page lists ------------------------------------------------------------
def test_a_rule_lists_its_own_parameters_in_file_order(ruleset: RuleSet) -> None:
    assert ruleset.rule("low-estradiol").param_names == ("e2_low_pg_ml", "window_days", "dose_factor")


def test_a_rule_lists_the_shared_parameters_it_names(ruleset: RuleSet) -> None:
    names = ruleset.rule("osteoporosis-antiresorptive").param_names
    assert {"tscore_osteoporosis", "tscore_osteoporosis_ai_women", "egfr_bisphosphonate_min"} <= set(names)


def test_a_rule_does_not_list_shared_parameters_it_never_uses(ruleset: RuleSet) -> None:
    assert ruleset.rule("vitamin-d").param_names == ("window_days", "low_ng_ml")


def test_a_shared_parameter_named_only_in_card_text_is_listed(rules_copy: Path) -> None:
    path = rules_copy / "monitoring/vitamin-d/rule.yaml"
    edit(
        path,
        "      - Threshold: below {params.low_ng_ml}",
        "      - Threshold: {params.frax_hip_high_pct}, {params.low_ng_ml}",
    )
    assert load_ruleset(rules_copy).rule("vitamin-d").param_names[-1] == "frax_hip_high_pct"


# ---- forbidden_card_words --------------------------------------------------------------------------
def set_words(rules_dir: Path, entries: str) -> None:
    head = rules_dir / "ruleset.yaml"
    text = head.read_text(encoding="utf-8")
    start = text.index("forbidden_card_words:\n")
    end = text.index("\n\n", start)
    head.write_text(text[:start] + f"forbidden_card_words:\n{entries}" + text[end + 1 :], encoding="utf-8")


def test_the_packaged_word_list_names_this_projects_words(ruleset: RuleSet) -> None:
    assert {w.phrase for w in ruleset.forbidden_words} == {
        "seed",
        "SPEC",
        "issue",
        "Osteoguard protocol",
        "Osteoguard default protocol",
        "rule set",
    }


def test_words_and_qualified_phrases_are_read(rules_copy: Path) -> None:
    set_words(
        rules_copy,
        "  - seed\n"
        "  - {phrase: Osteoguard default  protocol, allow: ['Osteoguard default protocol (configurable)']}\n"
        "  - {phrase: rule set, in: [summary]}\n",
    )
    assert load_ruleset(rules_copy).forbidden_words == (
        ForbiddenWord("seed", (), CLINICIAN_TEXT),
        ForbiddenWord("Osteoguard default protocol", ("Osteoguard default protocol (configurable)",)),
        ForbiddenWord("rule set", (), ("summary",)),
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("  - 3\n", "an entry is a word or phrase"),
        ("  - {phrase: '  '}\n", "needs a phrase"),
        ("  - {phrase: seed, allow: seed tray}\n", "allow is a list of phrases"),
        ("  - {phrase: seed, allow: [sowing]}\n", "must contain 'seed'"),
        ("  - {phrase: seed, in: [footer]}\n", "in is a list of some of"),
        ("  - {phrase: seed, where: [summary]}\n", "unknown field(s) ['where']"),
    ],
)
def test_a_broken_word_entry_is_refused_at_its_line(rules_copy: Path, entry: str, message: str) -> None:
    set_words(rules_copy, entry)
    path = rules_copy / "ruleset.yaml"
    line = problem_line(problems_of(rules_copy), path, message)
    assert path.read_text().splitlines()[line - 1].startswith("  - ")


def test_a_word_list_that_is_not_a_list_is_refused(rules_copy: Path) -> None:
    set_words(rules_copy, "")
    edit(rules_copy / "ruleset.yaml", "forbidden_card_words:\n", "forbidden_card_words: seed\n")
    assert problem_line(problems_of(rules_copy), rules_copy / "ruleset.yaml", "must be a list") > 1
