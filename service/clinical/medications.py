"""Which medication class a MedicationRequest's drug belongs to (SPEC §2).

A drug is named inline (``medicationCodeableConcept``), or by a ``medicationReference`` to a
contained Medication or one in the bundle, including that Medication's ingredients. A code
the rule set knows decides; only a drug with no RxNorm code is matched by the words of its
text and display.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cds_hooks.fhir import reference_id
from service.clinical.fhir import RXNORM, codings, concept_matches, concept_texts, text_mentions
from service.ruleset.model import RuleSet


def medication_concepts(request: dict[str, Any], bundle: Iterable[dict[str, Any]]) -> list[Any]:
    """The CodeableConcepts naming a MedicationRequest's drug (inline, contained or referenced)."""
    concepts: list[Any] = []
    inline = request.get("medicationCodeableConcept")
    if isinstance(inline, dict):
        concepts.append(inline)
    ref = request.get("medicationReference")
    if isinstance(ref, dict):
        target = ref.get("reference")
        medication: dict[str, Any] | None = None
        if isinstance(target, str) and target.startswith("#"):
            contained_list = request.get("contained")
            for contained in contained_list if isinstance(contained_list, list) else []:
                if isinstance(contained, dict) and contained.get("id") == target[1:]:
                    medication = contained
        elif isinstance(target, str):
            wanted = reference_id(ref, "Medication")
            for res in bundle:
                if res.get("resourceType") == "Medication" and res.get("id") == wanted:
                    medication = res
        if isinstance(ref.get("display"), str):
            concepts.append({"text": ref["display"]})
        if medication is not None:
            concepts.append(medication.get("code"))
            ingredients = medication.get("ingredient")
            for ingredient in ingredients if isinstance(ingredients, list) else []:
                if isinstance(ingredient, dict):
                    concepts.append(ingredient.get("itemCodeableConcept"))
    return [c for c in concepts if isinstance(c, dict)]


def is_medication(
    ruleset: RuleSet, request: dict[str, Any], group: str, bundle: Iterable[dict[str, Any]]
) -> bool:
    """True when a MedicationRequest's drug is in the rule set's medication group.

    A drug with an RxNorm coding is decided by its codes alone; only a drug with no RxNorm
    code (a compounded product, a local code) is matched by the words of its text/display
    (SPEC §2), so "replaces anastrozole" on a letrozole order names nothing.
    """
    codes, names = ruleset.medications[group]
    concepts = medication_concepts(request, list(bundle))
    if any(system == RXNORM for c in concepts for system, _, _ in codings(c)):
        return any(concept_matches(c, codes) for c in concepts)
    return text_mentions((t for c in concepts for t in concept_texts(c)), names)
