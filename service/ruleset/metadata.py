"""What the rule files say for clinicians rather than for the engine, read and validated.

* ``links:`` in each rule file: the card's main sources (guideline, trial or drug label), each
  ``{label, url}`` with an absolute https URL; at least one per rule. A variant may give its
  own ``links:`` for its cards (say, the guidance for women in a variant for women).
* the parameters a rule uses, which its documentation page lists;
* ``forbidden_card_words:`` in ruleset.yaml: this project's internal vocabulary, which no text
  a clinician reads may use (``osteoguard rules check`` looks for it).

The loader calls these with its problem collector, so every problem is ``file:line: message``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from service.ruleset.model import CLINICIAN_TEXT, ForbiddenWord, SourceLink

Report = Callable[[tuple[Any, ...], str], None]
_FORMATTER = string.Formatter()


def https_url(value: Any) -> bool:
    """An absolute https URL with a host, no credentials and no spaces or control characters."""
    if not isinstance(value, str) or re.search(r"[\s\x00-\x1f\x7f]", value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme == "https" and bool(parts.hostname) and "@" not in parts.netloc


def parse_links(raw: Any, report: Report, at: tuple[Any, ...] = ()) -> tuple[SourceLink, ...]:
    """``links:`` of a rule (or of a variant, at ``at``), each ``{label, url}``; at least one."""
    if not isinstance(raw, list) or not raw:
        report(
            (*at, "links"),
            "links must list the card's main sources, each {label, url} with an https URL",
        )
        return ()
    links = []
    for i, item in enumerate(raw):
        where = (*at, "links", i)
        if not isinstance(item, dict):
            report(where, "a link is a mapping {label, url}")
            continue
        unknown = sorted(str(k) for k in item if k not in ("label", "url"))
        if unknown:
            report(where, f"unknown link field(s) {unknown}: a link has a label and a url")
        label, url = item.get("label"), item.get("url")
        good = True
        if not isinstance(label, str) or not label.strip():
            report((*where, "label"), "a link needs a label: the source by name")
            good = False
        if not https_url(url):
            report((*where, "url"), f"a link url must be an absolute https URL, not {url!r}")
            good = False
        if good:
            links.append(SourceLink(" ".join(str(label).split()), str(url)))
    return tuple(links)


def _template_params(text: str) -> list[str]:
    try:
        fields = [name for _, name, _, _ in _FORMATTER.parse(text) if name]
    except ValueError:
        return []  # a broken template is reported where templates are checked
    return [name.split(".")[1] for name in fields if name.startswith("params.") and name.count(".") == 1]


def params_used(data: Mapping[str, Any], shared: Mapping[str, Any]) -> tuple[str, ...]:
    """The rule's own parameters, then the shared ones its conditions or card texts name."""
    own_params = data.get("params")
    own = [str(name) for name in own_params] if isinstance(own_params, dict) else []
    named: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and value.startswith("$"):
            named.add(value[1:])

    variants = data.get("variants")
    for variant in variants.values() if isinstance(variants, dict) else ():
        if isinstance(variant, dict):
            walk(variant.get("conditions"))
            for key in ("summary", "detail"):
                texts = variant.get(key)
                for text in texts if isinstance(texts, list) else [texts]:  # a detail may be parts
                    if isinstance(text, str):
                        named.update(_template_params(text))
    return (*own, *(name for name in shared if name in named and name not in own))


def _phrase(value: Any) -> str | None:
    if isinstance(value, str) and re.search(r"\w", value):
        return " ".join(value.split())
    return None


def parse_forbidden_words(raw: Any, report: Report) -> tuple[ForbiddenWord, ...]:
    """``forbidden_card_words``: each a word or phrase, or ``{phrase, allow, in}``."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        report(("forbidden_card_words",), "forbidden_card_words must be a list")
        return ()
    words = []
    for i, item in enumerate(raw):
        where = ("forbidden_card_words", i)
        spec: Any = {"phrase": item} if isinstance(item, str) else item
        if not isinstance(spec, dict):
            report(where, "an entry is a word or phrase, or {phrase, allow, in}")
            continue
        unknown = sorted(str(k) for k in spec if k not in ("phrase", "allow", "in"))
        if unknown:
            report(where, f"unknown field(s) {unknown}: an entry has phrase, allow and in")
        phrase = _phrase(spec.get("phrase"))
        if phrase is None:
            report((*where, "phrase"), "an entry needs a phrase with at least one letter or digit")
            continue
        allow_raw = spec.get("allow", [])
        allow = [_phrase(a) for a in allow_raw] if isinstance(allow_raw, list) else [None]
        if None in allow:
            report((*where, "allow"), "allow is a list of phrases")
            continue
        if any(phrase.lower() not in str(a).lower() for a in allow):
            report((*where, "allow"), f"every allowed phrase must contain {phrase!r}")
            continue
        fields = spec.get("in", list(CLINICIAN_TEXT))
        if not isinstance(fields, list) or not fields or any(f not in CLINICIAN_TEXT for f in fields):
            report((*where, "in"), f"in is a list of some of {list(CLINICIAN_TEXT)}")
            continue
        words.append(ForbiddenWord(phrase, tuple(str(a) for a in allow), tuple(fields)))
    return tuple(words)
