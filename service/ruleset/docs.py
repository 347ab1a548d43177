"""The rule documentation pages: small, self-contained HTML made from the rule files alone.

One page per rule (its title, the When/Then statements, every threshold and interval it uses
with its value, its sources, the rule set's name and version) and an index of them, written
for the clinician who follows ``source.url`` from a card. Made from the rule set only, so a
page never holds patient data. Plain HTML: no script, no style (the edge's CSP is
``default-src 'none'``), and every text from the rule files goes through :func:`html.escape`.

Every card links here: :func:`rule_doc_url` is its ``source.url``.
"""

from __future__ import annotations

from html import escape

from service.clinical.display import fmt_number
from service.ruleset.model import Rule, RuleSet, SourceLink

# Where the pages are when no request names it (``osteoguard evaluate``, the warm-up, the
# scenario runner) and OSTEOGUARD_PUBLIC_URL is not set: the address ``osteoguard serve`` uses.
OFFLINE_BASE = "http://127.0.0.1:8000"
DOCS_PATH = "/docs/rules"

_INDICATORS = {"info": "Information", "warning": "Warning", "critical": "Critical"}
# A parameter's unit, from how its name ends (window_days, e2_low_pg_ml, frax_hip_high_pct).
_UNITS = (("_pg_ml", "pg/mL"), ("_ng_ml", "ng/mL"), ("_days", "days"), ("_pct", "%"))


def docs_base(public_url: str | None, fallback: str = OFFLINE_BASE) -> str:
    """The base URL of the pages: the configured public URL, else ``fallback``."""
    return (public_url or fallback).rstrip("/")


def rule_doc_url(base: str, rule_id: str) -> str:
    """The URL of one rule's page below ``base`` (a card's ``source.url``)."""
    return f"{base.rstrip('/')}{DOCS_PATH}/{rule_id}"


def _value(name: str, value: float) -> str:
    number = fmt_number(float(value))
    unit = next((u for suffix, u in _UNITS if name.endswith(suffix)), "")
    return f"{number} {unit}" if unit else number


def _sources(rule: Rule) -> list[SourceLink]:
    """The rule's links, then those only some of its variants give: each URL once."""
    sources: dict[str, SourceLink] = {}
    for link in (*rule.links, *(link for variant in rule.variants for link in variant.links)):
        sources.setdefault(link.url, link)
    return list(sources.values())


def _page(title: str, body: list[str]) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title>",
            "</head>",
            "<body>",
            "<main>",
            *body,
            "</main>",
            "</body>",
            "</html>",
            "",
        ]
    )


def _footer(ruleset: RuleSet) -> str:
    return (
        f"<footer><p>{escape(ruleset.source_label)}: rule set {escape(ruleset.name)}, "
        f"version {escape(ruleset.version)}.</p></footer>"
    )


def rule_page(ruleset: RuleSet, rule: Rule) -> str:
    """The page of one rule."""
    body = [
        f"<h1>{escape(rule.title)}</h1>",
        f"<p>Card: {escape(_INDICATORS.get(rule.indicator, rule.indicator))}. "
        f"Rule <code>{escape(rule.id)}</code>.</p>",
        "<h2>When</h2>",
        f"<p>{escape(rule.when)}</p>",
        "<h2>Then</h2>",
        f"<p>{escape(rule.then)}</p>",
    ]
    if rule.param_names:
        body += [
            "<h2>Thresholds and intervals</h2>",
            "<p>The values in use. The team that runs this service can change them in the rule file.</p>",
            "<table>",
            '<thead><tr><th scope="col">Setting</th><th scope="col">Value</th></tr></thead>',
            "<tbody>",
            *(
                f"<tr><td><code>{escape(name)}</code></td>"
                f"<td>{escape(_value(name, rule.params[name]))}</td></tr>"
                for name in rule.param_names
            ),
            "</tbody>",
            "</table>",
        ]
    body += [
        "<h2>Sources</h2>",
        "<ul>",
        *(f'<li><a href="{escape(link.url)}">{escape(link.label)}</a></li>' for link in _sources(rule)),
        "</ul>",
        '<p><a href="../rules">All rules</a></p>',
        _footer(ruleset),
    ]
    return _page(f"{rule.title}: {ruleset.source_label}", body)


def index_page(ruleset: RuleSet) -> str:
    """The list of every rule, each linking to its page."""
    body = [
        f"<h1>{escape(ruleset.source_label)}: the rules</h1>",
        "<ul>",
        *(
            f'<li><a href="rules/{escape(rule.id)}">{escape(rule.title)}</a> '
            f"({escape(_INDICATORS.get(rule.indicator, rule.indicator))})</li>"
            for rule in ruleset.rules
        ),
        "</ul>",
        _footer(ruleset),
    ]
    return _page(f"Rules: {ruleset.source_label}", body)
