"""Which medication class, member and group a MedicationRequest or MedicationStatement is (SPEC §2).

A drug is named inline (``medicationCodeableConcept``), or by a ``medicationReference`` to a
contained Medication or one in the bundle, including that Medication's ingredients. It belongs
to a class when one of its RxNorm codes is in the class. Only when none of its codes is known
to the rule set (no RxNorm code, or codes no class lists: compounded products, local codes,
NDC only) do its text and displays decide, by ingredient or brand name as whole words. A code
the rule set knows always wins over text: "replaces anastrozole" on a letrozole order names
nothing. The lookups are the rule set's, built once when it is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from cds_hooks.fhir import reference_id
from service.clinical.fhir import RXNORM, codings, concept_texts
from service.ruleset.model import Medications, Membership, RuleSet


def _referenced(resource: dict[str, Any], ref: dict[str, Any], bundle: Iterable[dict[str, Any]]) -> Any:
    target = ref.get("reference")
    if not isinstance(target, str):
        return None
    if target.startswith("#"):
        contained = resource.get("contained")
        for item in contained if isinstance(contained, list) else []:
            if isinstance(item, dict) and item.get("id") == target[1:]:
                return item
        return None
    wanted = reference_id(ref, "Medication")
    for res in bundle:
        if res.get("resourceType") == "Medication" and res.get("id") == wanted:
            return res
    return None


def medication_concepts(resource: dict[str, Any], bundle: Iterable[dict[str, Any]]) -> list[Any]:
    """The CodeableConcepts naming a request's or statement's drug (inline, contained or referenced)."""
    concepts: list[Any] = [resource.get("medicationCodeableConcept")]
    ref = resource.get("medicationReference")
    if isinstance(ref, dict):
        if isinstance(ref.get("display"), str):
            concepts.append({"text": ref["display"]})
        medication = _referenced(resource, ref, bundle)
        if isinstance(medication, dict):
            concepts.append(medication.get("code"))
            ingredients = medication.get("ingredient")
            for ingredient in ingredients if isinstance(ingredients, list) else []:
                if not isinstance(ingredient, dict):
                    continue
                concepts.append(ingredient.get("itemCodeableConcept"))
                item = ingredient.get("itemReference")
                if isinstance(item, dict) and isinstance(item.get("display"), str):
                    concepts.append({"text": item["display"]})
    return [c for c in concepts if isinstance(c, dict)]


_WORD = re.compile(r"\w+")
_GAP = re.compile(r"[\s\-]+")  # between the words of a name: "Depo-Testosterone", "alendronic  acid"
_NEGATED = re.compile(r"-free\b")  # "testosterone-free" does not name testosterone


def _named(index: Medications, texts: Iterator[str]) -> frozenset[Membership]:
    """The memberships of every name found in the texts as whole words, case-insensitive.

    Word lookups, not one regex of every name: a text is split into words once and only the
    names starting with one of its words are compared (a text-only drug is read on most calls).
    """
    found: set[Membership] = set()
    starts = index.name_starts
    for text in texts:
        lowered = text.lower()
        if starts.keys().isdisjoint(_WORD.findall(lowered)):
            continue  # the usual case: no word of the text starts a name
        words = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(lowered)]
        for i, (word, _, _) in enumerate(words):
            for name in starts.get(word, ()):
                span = words[i : i + len(name)]
                if len(span) < len(name) or any(w[0] != n for w, n in zip(span, name, strict=False)):
                    continue
                if any(not _GAP.fullmatch(lowered, a[2], b[1]) for a, b in zip(span, span[1:], strict=False)):
                    continue
                if _NEGATED.match(lowered, span[-1][2]):
                    continue
                found |= index.by_name[" ".join(name)]
                break  # the longest name starting here
    return frozenset(found)


def memberships(
    ruleset: RuleSet, resource: dict[str, Any], bundle: Iterable[dict[str, Any]]
) -> frozenset[Membership]:
    """Every (class, member, group) the drug of a MedicationRequest/Statement belongs to."""
    index = ruleset.medications
    concepts = medication_concepts(resource, bundle)
    known = [
        index.by_code[code]
        for concept in concepts
        for system, code, _ in codings(concept)
        if system == RXNORM and code in index.by_code
    ]
    if known:
        return frozenset().union(*known)
    return _named(index, (text for concept in concepts for text in concept_texts(concept)))


def is_medication(
    ruleset: RuleSet, resource: dict[str, Any], cls: str, bundle: Iterable[dict[str, Any]]
) -> bool:
    """True when the drug of a MedicationRequest/Statement is in the medication class ``cls``."""
    return any(m.cls == cls for m in memberships(ruleset, resource, bundle))


def medication_members(
    ruleset: RuleSet, resource: dict[str, Any], bundle: Iterable[dict[str, Any]]
) -> set[str]:
    """The class members the drug is ("alendronate", "denosumab"…): never suggest one of these."""
    return {m.member for m in memberships(ruleset, resource, bundle)}


def medication_groups(
    ruleset: RuleSet, resource: dict[str, Any], bundle: Iterable[dict[str, Any]]
) -> set[str]:
    """The groups of the drug's members ("bisphosphonate", "denosumab", "anabolic")."""
    return {m.group for m in memberships(ruleset, resource, bundle) if m.group}
