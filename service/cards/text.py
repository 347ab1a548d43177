"""Card text templates: filling them with a rule's evidence, safely.

Templates are ``str.format`` strings from the rule files (data, not code): private names are
refused, floats print the way clinicians read them, and evidence that came from the client's
FHIR data is escaped before it reaches Markdown. Each template is parsed once.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Mapping
from typing import Any

from service.clinical.display import fmt_number
from service.ruleset.model import Rule, RuleSet
from service.ruleset.schema import Fact


class _Namespace(dict[str, Any]):
    """Dict whose keys are readable as attributes in ``{alias.field}`` templates."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


class _SafeFormatter(string.Formatter):
    """str.format without attribute access to private names (rule files are data, not code)."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if any(part.startswith("_") for part in re.split(r"[.\[\]]", field_name)):
            raise ValueError(f"placeholder {field_name!r} is not allowed")
        return super().get_field(field_name, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, float) and not format_spec:
            return fmt_number(value)
        return str(super().format_field(value, format_spec))


_FORMAT = _SafeFormatter()


_Piece = tuple[str, tuple[str, ...] | None, str | None, str]


@functools.lru_cache(maxsize=4096)
def _compile(text: str) -> tuple[_Piece, ...] | None:
    """A template split once into (literal, field path, conversion, format spec) pieces.

    ``string.Formatter`` re-parses the text on every call in pure Python; card texts are a
    fixed set per rule set, so each is parsed once. None when a placeholder needs what only
    the formatter does (indexing, positional or nested fields): those go the slow way.
    """
    pieces: list[_Piece] = []
    for literal, field_name, spec, conversion in _FORMAT.parse(text):
        if field_name is None:
            pieces.append((literal, None, None, ""))
            continue
        path = tuple(field_name.split("."))
        if "[" in field_name or "{" in (spec or "") or not all(path) or path[0].isdigit():
            return None
        if any(part.startswith("_") for part in path):
            return None  # the formatter raises the error that names the placeholder
        pieces.append((literal, path, conversion, spec or ""))
    return tuple(pieces)


def _attribute(value: Any, name: str) -> Any:
    if isinstance(value, Mapping):
        try:
            return value[name]
        except KeyError as exc:
            raise AttributeError(name) from exc
    return getattr(value, name)


def render(text: str, values: Mapping[str, Any]) -> str:
    """Fill a card text template. Unknown placeholders raise KeyError/AttributeError."""
    pieces = _compile(text)
    if pieces is None:
        return _FORMAT.vformat(text, (), values)
    out = []
    for literal, path, conversion, spec in pieces:
        out.append(literal)
        if path is None:
            continue
        value = values[path[0]]
        for name in path[1:]:
            value = _attribute(value, name)
        if conversion:
            value = _FORMAT.convert_field(value, conversion)
        out.append(_FORMAT.format_field(value, spec))
    return "".join(out)


_LEAVES = (str, int, float)


def _ns(mapping: Mapping[str, Any]) -> _Namespace:
    # Leaves are checked first: isinstance against the Mapping ABC is slow for every str.
    return _Namespace(
        {k: v if isinstance(v, _LEAVES) or not isinstance(v, Mapping) else _ns(v) for k, v in mapping.items()}
    )


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~#!])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# Either of the above: most evidence (dates, references, values) has neither, and one search
# is a tenth of the cost of two substitutions (1.2 -> 0.13 µs a string).
_NEEDS_ESCAPE = re.compile(r"[\\`*_\[\]<>|~#!\x00-\x1f\x7f]")


def markdown_text(value: str) -> str:
    """Client-supplied text made inert in GitHub-flavoured Markdown (no links, HTML, emphasis)."""
    if _NEEDS_ESCAPE.search(value) is None:
        return value
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _CONTROL.sub(" ", value))


def _escaped(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: markdown_text(v) if isinstance(v, str) else _escaped(v) if isinstance(v, Mapping) else v
        for k, v in mapping.items()
    }


# The params and rule-set names of a rule, as templates read them: the same for every card of
# that rule, so made once (keyed by identity, checked, as rule sets are replaced on reload).
_CONSTANTS: dict[int, tuple[Rule, RuleSet, _Namespace, _Namespace]] = {}
_MAX_CONSTANTS = 1024


def _constants(rule: Rule, ruleset: RuleSet) -> tuple[_Namespace, _Namespace]:
    cached = _CONSTANTS.get(id(rule))
    if cached is not None and cached[0] is rule and cached[1] is ruleset:
        return cached[2], cached[3]
    params = _ns({k: fmt_number(v) if isinstance(v, float) else v for k, v in rule.params.items()})
    names = _ns({"name": ruleset.name, "version": ruleset.version})
    if len(_CONSTANTS) >= _MAX_CONSTANTS:
        _CONSTANTS.clear()
    _CONSTANTS[id(rule)] = (rule, ruleset, params, names)
    return params, names


def template_values(
    rule: Rule,
    ruleset: RuleSet,
    matched: Mapping[str, Fact],
    *,
    markdown: bool = False,
    cache: dict[tuple[int, bool], tuple[Fact, _Namespace]] | None = None,
) -> dict[str, Any]:
    """What a rule's card templates can refer to: matched aliases, params, rule-set info.

    With ``markdown``, evidence strings (which come from the client's FHIR data) are escaped.
    ``cache`` (one per call: the cards of one evaluation share facts) keeps each fact's
    namespace, so a fact matched by several rules is escaped once. Templates only read them.
    """
    values: dict[str, Any] = {}
    for alias, fact in matched.items():
        key = (id(fact), markdown)
        hit = cache.get(key) if cache is not None else None
        if hit is not None and hit[0] is fact:
            values[alias] = hit[1]
            continue
        namespace = _ns(_escaped(fact.evidence) if markdown else fact.evidence)
        if cache is not None:
            cache[key] = (fact, namespace)
        values[alias] = namespace
    values["params"], values["ruleset"] = _constants(rule, ruleset)
    return values


def fill_resource(template: Any, values: Mapping[str, str]) -> Any:
    """Substitute ``{patient_ref}``-style placeholders in every string of a resource template."""
    if isinstance(template, dict):
        return {k: fill_resource(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [fill_resource(v, values) for v in template]
    if isinstance(template, str) and "{" in template:
        return render(template, values)
    return template
