"""Clinical safety of rule files: advice about anastrozole stays where it is safe (SPEC §3).

In breast cancer low estradiol is the goal, so no card for a woman, a patient of unknown or
other sex may lower, hold, stop or question anastrozole. A rule file *declares* which variant
speaks to the anastrozole dose or need (``anastrozole_advice: true``); the loader refuses that
declaration on a variant whose conditions do not require a male patient, and refuses text
that speaks to anastrozole in a variant that did not declare it. The lexical check is a
backstop for a forgotten declaration, not the rule itself; the card builder enforces the same
invariant again on every card it builds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# How a drug may be named in card text (ingredient and brand, case-insensitive).
DRUG_NAMES = ("anastrozole", "arimidex")
# An advice verb shortly before the drug's name: "decrease the anastrozole", "hold Arimidex".
_VERBS = (
    r"lower\w*|reduc\w*|decreas\w*|cut\w*|halv\w*|titrat\w*|taper\w*|hold\w*|paus\w*|stop\w*"
    r"|discontinu\w*|withdr[ae]w\w*|switch\w*|chang\w*|adjust\w*|reconsider\w*|review\w*|continu\w*"
    r"|question\w*|reassess\w*|re-evaluat\w*|evaluat\w*|cease|omit\w*|skip\w*|remov\w*|cancel\w*"
)
# ... or a dose/need word shortly after it: "anastrozole dose", "anastrozole is still needed".
_AFTER = r"dos\w*|need\w*|necessary|indicat\w*|required|warranted|justified|schedule|frequency|weekly"
_DRUG = "|".join(DRUG_NAMES)
_BEFORE_DRUG = re.compile(rf"\b(?:{_VERBS})\b(?:\W+\w+){{0,4}}?\W+(?:{_DRUG})\b", re.IGNORECASE)
_DRUG_THEN = re.compile(rf"\b(?:{_DRUG})\b(?:\W+\w+){{0,3}}?\W+(?:{_AFTER})\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.;!?])\s+|\n+")


def speaks_to_anastrozole(text: str) -> bool:
    """True when a sentence of ``text`` advises on the anastrozole dose or need."""
    return any(_BEFORE_DRUG.search(s) or _DRUG_THEN.search(s) for s in _SENTENCE.split(text))


def requires_male(conditions: Iterable[dict[str, Any]]) -> bool:
    """True when a context condition of the variant requires ``sex: male`` (at its top level)."""
    for cond in conditions:
        for expr in cond.values():
            parts = expr.get("$and", [expr]) if isinstance(expr, dict) else []
            kinds = [p.get("kind") for p in parts if isinstance(p, dict)]
            if "context" in kinds and any(isinstance(p, dict) and p.get("sex") == "male" for p in parts):
                return True
    return False


def advice_problems(declared: bool, texts: Iterable[str], conditions: list[dict[str, Any]]) -> list[str]:
    """What is wrong with a variant's anastrozole advice, as messages (empty when safe)."""
    if declared:
        if requires_male(conditions):
            return []
        return [
            "anastrozole_advice is declared, so the variant must require {sex: male} in its context "
            "condition (never advise on anastrozole for a woman or a patient of unknown sex)"
        ]
    if any(speaks_to_anastrozole(t) for t in texts):
        return [
            "card text speaks to the anastrozole dose or need: declare anastrozole_advice: true "
            "on a variant that requires {sex: male}, or reword it"
        ]
    return []
