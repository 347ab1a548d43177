"""The rule documentation pages: made from the rule files, complete, escaped, script-free."""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser

import pytest

from service.ruleset.docs import OFFLINE_BASE, docs_base, index_page, rule_doc_url, rule_page
from service.ruleset.loader import load_ruleset
from service.ruleset.model import Rule, RuleSet, SourceLink
from service.settings import PACKAGED_RULES_DIR

RULE_IDS = [r.id for r in load_ruleset(PACKAGED_RULES_DIR).rules]


class _Tags(HTMLParser):
    """The tags and attributes of a page, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Tags:
    tags = _Tags()
    tags.feed(page)
    return tags


def text_of(page: str) -> str:
    return " ".join(" ".join(parse(page).text).split())


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_every_rule_page_states_the_rule_and_its_values(ruleset: RuleSet, rule_id: str) -> None:
    rule = ruleset.rule(rule_id)
    text = text_of(rule_page(ruleset, rule))
    assert rule.title in text
    assert " ".join(rule.when.split()) in text and " ".join(rule.then.split()) in text
    for name in rule.param_names:
        assert name in text
    assert ruleset.name in text and ruleset.version in text


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_every_rule_page_links_its_sources(ruleset: RuleSet, rule_id: str) -> None:
    rule = ruleset.rule(rule_id)
    hrefs = [attrs["href"] for tag, attrs in parse(rule_page(ruleset, rule)).tags if tag == "a"]
    sources = [link.url for link in rule.links] + [link.url for v in rule.variants for link in v.links]
    assert sorted(set(sources)) == sorted(h for h in hrefs if h and h.startswith("https://"))


def test_thresholds_show_their_values_and_units(ruleset: RuleSet) -> None:
    text = text_of(rule_page(ruleset, ruleset.rule("low-estradiol")))
    assert "e2_low_pg_ml 10 pg/mL" in text and "window_days 180 days" in text and "dose_factor 0.5" in text


def test_shared_thresholds_show_their_values(ruleset: RuleSet) -> None:
    text = text_of(rule_page(ruleset, ruleset.rule("osteoporosis-antiresorptive")))
    assert "tscore_osteoporosis -2.5" in text and "frax_hip_high_pct 3 %" in text


def test_a_page_has_no_script_no_style_and_no_external_resource(ruleset: RuleSet) -> None:
    for page in [index_page(ruleset), *(rule_page(ruleset, r) for r in ruleset.rules)]:
        tags = parse(page).tags
        assert not [t for t, _ in tags if t in ("script", "style", "img", "iframe", "link", "object")]
        assert not [a for _, a in tags if "style" in a or any(k.startswith("on") for k in a)]


def test_text_from_the_rule_files_is_escaped(ruleset: RuleSet) -> None:
    rule = dataclasses.replace(
        ruleset.rule("vitamin-d"),
        title="<script>alert(1)</script>",
        when='E2 < 10 & "quoted"',
        links=(SourceLink('x" onclick="alert(1)', 'https://example.org/?a=1&b="2"'),),
    )
    page = rule_page(ruleset, rule)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "E2 &lt; 10 &amp; &quot;quoted&quot;" in page
    anchors = [a for t, a in parse(page).tags if t == "a" and a.get("href", "").startswith("https://example")]
    assert anchors == [{"href": 'https://example.org/?a=1&b="2"'}]


def test_a_link_only_a_variant_gives_is_listed_once(ruleset: RuleSet) -> None:
    rule = ruleset.rule("osteopenia-monitoring")
    hadji = SourceLink("Hadji P et al.", "https://doi.org/10.1016/j.jbo.2017.03.001")
    extra = SourceLink("Another source", "https://example.org/another")
    variants = tuple(dataclasses.replace(v, links=(hadji, extra)) for v in rule.variants)
    page = rule_page(ruleset, dataclasses.replace(rule, variants=variants))
    assert page.count("https://example.org/another") == 1
    assert page.count(hadji.url) == 1


def test_the_index_links_every_rule_page(ruleset: RuleSet) -> None:
    page = index_page(ruleset)
    hrefs = [a["href"] for t, a in parse(page).tags if t == "a"]
    assert hrefs == [f"rules/{rule_id}" for rule_id in RULE_IDS]
    assert ruleset.version in text_of(page)


def test_a_rule_page_links_back_to_the_index(ruleset: RuleSet) -> None:
    hrefs = [a["href"] for t, a in parse(rule_page(ruleset, ruleset.rules[0])).tags if t == "a"]
    assert "../rules" in hrefs


def test_a_page_is_a_whole_html_document(ruleset: RuleSet) -> None:
    page = rule_page(ruleset, ruleset.rules[0])
    assert page.startswith('<!DOCTYPE html>\n<html lang="en">')
    assert re.search(r"<meta charset=\"utf-8\">", page) and page.rstrip().endswith("</html>")


def test_a_page_speaks_of_no_patient(ruleset: RuleSet) -> None:
    text = text_of(rule_page(ruleset, ruleset.rule("low-estradiol")))
    assert "Patient/" not in text and "{" not in text


def test_rule_doc_url_is_below_the_base() -> None:
    assert rule_doc_url("https://bone.example.org/og/", "vitamin-d") == (
        "https://bone.example.org/og/docs/rules/vitamin-d"
    )


@pytest.mark.parametrize(
    ("public_url", "fallback", "expected"),
    [
        ("https://bone.example.org/", "http://testserver/", "https://bone.example.org"),
        (None, "http://testserver/", "http://testserver"),
        (None, OFFLINE_BASE, "http://127.0.0.1:8000"),
        ("", OFFLINE_BASE, "http://127.0.0.1:8000"),
    ],
)
def test_docs_base_prefers_the_public_url(public_url: str | None, fallback: str, expected: str) -> None:
    assert docs_base(public_url, fallback) == expected


def test_a_rule_without_parameters_has_no_threshold_table(ruleset: RuleSet) -> None:
    rule: Rule = dataclasses.replace(ruleset.rule("vitamin-d"), param_names=())
    assert "<table>" not in rule_page(ruleset, rule)
