"""Clinical safety of rule files: advice about anastrozole stays where it is safe (SPEC §3).

In breast cancer low estradiol is the goal, and a man not on testosterone therapy may be on an
aromatase inhibitor on purpose. A rule file *declares* which variant speaks about anastrozole
(``anastrozole_advice``):

* ``dose``: lowers, holds, stops or questions the dose. Only a variant whose conditions
  require a male patient on testosterone therapy may declare it.
* ``indication``: asks why anastrozole is given (a man not on testosterone therapy with a very
  low estradiol). Only a variant that requires a male patient may declare it.

The loader refuses a declaration outside those variants, and text that speaks to anastrozole
in a variant that declared nothing. The lexical check is a backstop for a forgotten
declaration, not the rule itself; the card builder enforces the same invariant again, on the
facts of every call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# How a drug may be named in card text (ingredient and brand, case-insensitive).
DRUG_NAMES = ("anastrozole", "arimidex", "aromatase inhibitor", "aromatase-inhibitor")
# An advice verb shortly before the drug's name: "decrease the anastrozole", "hold Arimidex".
_VERBS = (
    r"lower\w*|reduc\w*|decreas\w*|cut\w*|halv\w*|titrat\w*|taper\w*|hold\w*|paus\w*|stop\w*"
    r"|discontinu\w*|withdr[ae]w\w*|switch\w*|chang\w*|adjust\w*|reconsider\w*|review\w*|continu\w*"
    r"|question\w*|reassess\w*|re-evaluat\w*|evaluat\w*|cease|omit\w*|skip\w*|remov\w*|cancel\w*"
    r"|replac\w*|instead\s+of|without"
)
# ... or a dose/need word shortly after it: "anastrozole dose", "anastrozole is still needed".
_AFTER = (
    r"dos\w*|need\w*|necessary|indicat\w*|required|warranted|justified|schedule|frequency|weekly"
    # passive advice: "anastrozole could be stopped", "... may be replaced by tamoxifen"
    r"|stopped|held|halted|lowered|reduced|halved|decreased|discontinued|tapered|withdrawn|changed"
    r"|replaced|switched|paused|ceased|removed|cancelled|omitted"
)
_DRUG = "|".join(re.escape(n).replace(r"\ ", r"\s+") for n in DRUG_NAMES)
# The lookahead holds every first letter of _VERBS: it changes no match, but most words fail it
# at once instead of trying each verb in turn (14 -> 8 µs over one card's sentences).
_VERB_STARTS = "".join(sorted({verb[0] for verb in _VERBS.split("|")}))
assert _VERB_STARTS.isalpha(), "each advice verb must start with a plain letter"
_BEFORE_DRUG = re.compile(
    rf"\b(?=[{_VERB_STARTS}])(?:{_VERBS})\b(?:\W+\w+){{0,4}}?\W+(?:{_DRUG})\b", re.IGNORECASE
)
_DRUG_THEN = re.compile(rf"\b(?:{_DRUG})\b(?:\W+\w+){{0,3}}?\W+(?:{_AFTER})\b", re.IGNORECASE)
# Sentences end at whitespace after . ; ! ? and at line breaks. The lookahead changes nothing
# (both alternatives start with white space) but lets the scan skip to white space: the split
# of a card's text took 23 µs without it, 15 µs with it.
_SENTENCE = re.compile(r"(?=\s)(?:(?<=[.;!?])\s+|\n+)")
# Both patterns above need the drug's name, so a sentence without it is skipped: the card
# builder checks every card's text, and most sentences never name the drug.
_NAMES_DRUG = re.compile(_DRUG, re.IGNORECASE)


def speaks_to_anastrozole(text: str) -> bool:
    """True when a sentence of ``text`` advises on the anastrozole dose or need.

    Only the lines in which a mention of the drug starts are split into sentences: every line
    break lies inside a sentence break, so no sentence spans two lines, and a sentence that
    names the drug holds the start of a mention (only "aromatase inhibitor" can span a line
    break, and no name of the drug starts inside its second word). A card's text has a dozen
    lines and names the drug in two or three: 51 -> 36 µs. The test keeps the plain
    sentence-by-sentence check as its reference.
    """
    checked = -1
    for mention in _NAMES_DRUG.finditer(text):
        start = text.rfind("\n", 0, mention.start()) + 1
        if start == checked:
            continue  # another mention in a line already checked
        checked = start
        end = text.find("\n", mention.start())
        for s in _SENTENCE.split(text[start : end if end >= 0 else len(text)]):
            if _NAMES_DRUG.search(s) and (_BEFORE_DRUG.search(s) or _DRUG_THEN.search(s)):
                return True
    return False


ADVICE = ("dose", "indication")


def _requires(conditions: Iterable[dict[str, Any]], field: str, value: Any) -> bool:
    """True when a context condition of the variant requires ``field: value`` (at its top level)."""
    for cond in conditions:
        for expr in cond.values():
            parts = expr.get("$and", [expr]) if isinstance(expr, dict) else []
            kinds = [p.get("kind") for p in parts if isinstance(p, dict)]
            if "context" in kinds and any(isinstance(p, dict) and p.get(field) == value for p in parts):
                return True
    return False


def requires_male(conditions: Iterable[dict[str, Any]]) -> bool:
    """True when a context condition of the variant requires ``sex: male``."""
    return _requires(conditions, "sex", "male")


def requires_testosterone(conditions: Iterable[dict[str, Any]]) -> bool:
    """True when a context condition of the variant requires ``on_testosterone: 1``."""
    return _requires(conditions, "on_testosterone", 1)


def advice_problems(
    declared: str | None, texts: Iterable[str], conditions: list[dict[str, Any]]
) -> list[str]:
    """What is wrong with a variant's anastrozole advice, as messages (empty when safe)."""
    if declared is not None and declared not in ADVICE:
        return [f"anastrozole_advice must be one of {ADVICE}"]
    if declared == "dose":
        if requires_male(conditions) and requires_testosterone(conditions):
            return []
        return [
            "anastrozole_advice: dose needs a variant that requires {sex: male} and "
            "{on_testosterone: 1} in its context condition (never advise on the anastrozole dose "
            "for a woman, a patient of unknown sex, or a man not on testosterone therapy)"
        ]
    if declared == "indication":
        if requires_male(conditions):
            return []
        return [
            "anastrozole_advice: indication needs a variant that requires {sex: male} in its "
            "context condition (never question anastrozole for a woman or a patient of unknown sex)"
        ]
    if any(speaks_to_anastrozole(t) for t in texts):
        return [
            "card text speaks to the anastrozole dose or need: declare anastrozole_advice (dose or "
            "indication) on a variant that requires {sex: male}, or reword it"
        ]
    return []
