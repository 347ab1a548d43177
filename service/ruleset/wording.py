"""The vocabulary check of ``osteoguard rules check``: no internal words in text clinicians read.

Card summaries, details, suggestion and link labels, action descriptions, and each rule's
title, when and then (its documentation page) must not use a word of ruleset.yaml's
``forbidden_card_words``. The rule files are read as YAML nodes, so each use is reported at
its own line, and a text shared through a YAML anchor is reported once. Matching is by whole
words, in any case, across line breaks; an entry's allowed phrases are blanked out first.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import yaml

from service.ruleset.model import CLINICIAN_TEXT, ForbiddenWord, RuleSet

# Subtrees that hold no clinician text: engine conditions, FHIR resource templates.
_SKIP = frozenset({"conditions", "resource"})


def _pattern(phrase: str) -> re.Pattern[str]:
    words = r"\s+".join(re.escape(word) for word in phrase.split())
    return re.compile(rf"(?<!\w){words}(?!\w)", re.IGNORECASE)


def _texts(node: yaml.Node, seen: set[int]) -> Iterator[tuple[str, yaml.ScalarNode]]:
    """Every (key, scalar) of clinician text below ``node``, each scalar once.

    A text may be written anywhere (a shared block of anchors) and used as a summary or a
    detail part through an alias: it is clinician text where it is used, reported at the line
    where it is written, once however often it is used.
    """
    if isinstance(node, yaml.ScalarNode) or id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name in _SKIP:
                continue
            parts = (
                value.value if name in CLINICIAN_TEXT and isinstance(value, yaml.SequenceNode) else [value]
            )
            if name in CLINICIAN_TEXT and all(isinstance(part, yaml.ScalarNode) for part in parts):
                for part in parts:  # a text, or a detail made of parts
                    if id(part) not in seen:
                        seen.add(id(part))
                        yield str(name), part
            else:
                yield from _texts(value, seen)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _texts(item, seen)


def _uses(source: str, field: str, word: ForbiddenWord) -> Iterator[int]:
    """Offsets in ``source`` (a scalar as written in the file) where ``word`` is used."""
    if field not in word.fields:
        return
    for allowed in word.allow:
        source = _pattern(allowed).sub(lambda m: re.sub(r"\S", " ", m.group(0)), source)
    for match in _pattern(word.phrase).finditer(source):
        yield match.start()


def file_problems(path: Path, words: tuple[ForbiddenWord, ...]) -> list[str]:
    """Each use of a forbidden word in the clinician text of one rule file, as file:line."""
    text = path.read_text(encoding="utf-8")
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        return []
    problems = []
    for field, node in _texts(root, set()):
        start = node.start_mark.index
        source = text[start : node.end_mark.index]
        for word in words:
            for offset in _uses(source, field, word):
                line = text.count("\n", 0, start + offset) + 1
                problems.append(
                    f"{path}:{line}: {field} uses {word.phrase!r}, a word of this project, not of a "
                    "clinician (ruleset.yaml forbidden_card_words)"
                )
    return problems


def check_wording(ruleset: RuleSet) -> list[str]:
    """Every use of a forbidden word in the rule files of ``ruleset``."""
    if not ruleset.forbidden_words:
        return []
    return [p for rule in ruleset.rules for p in file_problems(rule.path, ruleset.forbidden_words)]
