"""Card text templates: the compiled renderer fills them exactly as ``str.format`` would."""

from __future__ import annotations

import random
from typing import Any

import pytest

from service.cards import text as card_text
from service.cards.text import _FORMAT, _ns, render, template_values
from service.ruleset.check import SAMPLE_EVIDENCE, alias_kinds
from service.ruleset.model import RuleSet
from service.ruleset.schema import Fact

VALUES = _ns({"e2": {"value": 8.25, "date": "2026-09-01", "days": 12}, "params": {"low": 10.0}})


def every_template(ruleset: RuleSet) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for rule in ruleset.rules:
        for variant in rule.variants:
            matched = {
                alias: Fact(kind, {}, SAMPLE_EVIDENCE[kind])
                for alias, kind in alias_kinds(variant.conditions).items()
            }
            for markdown in (False, True):
                values = template_values(rule, ruleset, matched, markdown=markdown)
                out += [(variant.summary, values), (variant.detail, values)]
    return out


def test_every_rule_text_renders_as_the_formatter_does(ruleset: RuleSet) -> None:
    templates = every_template(ruleset)
    assert len(templates) > 20
    for text, values in templates:
        assert render(text, values) == _FORMAT.vformat(text, (), values)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("E2 {e2.value} pg/mL on {e2.date}", "E2 8.25 pg/mL on 2026-09-01"),
        ("below {params.low}", "below 10"),  # floats display as fmt_number does
        ("{e2.value:.1f}|{e2.days:>4}|{e2.date!r}", "8.2|  12|'2026-09-01'"),
        ("{{literal}} {e2.days}", "{literal} 12"),
        ("{e2[date]}", "2026-09-01"),  # indexing: the formatter's own path
        ("no placeholders", "no placeholders"),
    ],
)
def test_render(text: str, expected: str) -> None:
    assert render(text, VALUES) == expected == _FORMAT.vformat(text, (), VALUES)


@pytest.mark.parametrize("text", ["{e2.__class__}", "{e2._secret}", "{e2[_x]}"])
def test_private_names_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        render(text, VALUES)


@pytest.mark.parametrize(("text", "error"), [("{missing}", KeyError), ("{e2.missing}", AttributeError)])
def test_unknown_placeholders_raise(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        render(text, VALUES)


def test_markdown_escaping_skips_only_text_that_needs_none() -> None:
    # The shortcut returns text unchanged only when both substitutions would leave it so.
    def both_substitutions(value: str) -> str:
        return card_text._MARKDOWN_SPECIAL.sub(r"\\\1", card_text._CONTROL.sub(" ", value))

    rnd = random.Random(11)
    singles = [chr(c) for c in range(0x3000)]
    mixed = ["".join(rnd.choice(singles[:0x100]) for _ in range(rnd.randint(0, 12))) for _ in range(5000)]
    assert [v for v in singles + mixed if card_text.markdown_text(v) != both_substitutions(v)] == []
