"""The advice check's fast paths answer exactly as the plain sentence-by-sentence check.

``speaks_to_anastrozole`` splits only the lines where a mention of the drug starts, scans with
a lookahead first and splits sentences with a faster equivalent pattern. The reference below
is the check as it was written before those changes; generated texts, mixing the drug's names, advice words,
sentence ends, white space and the non-ASCII letters that IGNORECASE folds to ASCII, must get
the same answer from both.
"""

from __future__ import annotations

import random
import re

from service.ruleset import safety
from service.ruleset.safety import speaks_to_anastrozole

# The plain check, compiled here from the module's vocabulary (its verbs, dose words and drug
# names), as it was written on 2026-12-01: only the vocabulary is shared, not a pattern.
_DRUG = "|".join(re.escape(n).replace(r"\ ", r"\s+") for n in safety.DRUG_NAMES)
_BEFORE = re.compile(rf"\b(?:{safety._VERBS})\b(?:\W+\w+){{0,4}}?\W+(?:{_DRUG})\b", re.IGNORECASE)
_THEN = re.compile(rf"\b(?:{_DRUG})\b(?:\W+\w+){{0,3}}?\W+(?:{safety._AFTER})\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.;!?])\s+|\n+")
_NAMES = re.compile(_DRUG, re.IGNORECASE)


def reference(text: str) -> bool:
    if not _NAMES.search(text):
        return False
    return any(_NAMES.search(s) and (_BEFORE.search(s) or _THEN.search(s)) for s in _SENTENCE.split(text))


WORDS = [
    "anastrozole",
    "Anastrozole",
    "ARIMIDEX",
    "aromatase",
    "inhibitor",
    "aromatase-inhibitor",
    "anaſtrozole",
    "arimidex",
    "lower",
    "Hold",
    "stop",
    "the",
    "dose",
    "needed",
    "review",
    "adjust",
    "Kelvin",
    "\u212aeep",
    "ıs",
    "İt",
    "estradiol",
    "bone",
    "instead",
    "of",
    "weekly",
    "re-evaluate",
    "withdrew",
    "is",
    "still",
    "8.2",
    "pg/mL",
    "ß",
]
GLUE = [
    " ",
    "  ",
    ". ",
    "; ",
    "! ",
    "? ",
    "\n",
    "\n\n",
    ".\n",
    ", ",
    " (",
    ") ",
    "\t",
    ":",
    "-",
    "",
    " \n ",
    ".  \n  ",
    "\n.",
    "\r",
    "\u2028",
    "\x0c",
]


def generated(seed: int, count: int) -> list[str]:
    """Texts of up to 14 words and glue, from a fixed seed (the same texts every run)."""
    rnd = random.Random(seed)
    return [
        "".join(rnd.choice(WORDS) + rnd.choice(GLUE) for _ in range(rnd.randint(0, 14))) for _ in range(count)
    ]


def test_fast_check_equals_the_reference() -> None:
    texts = generated(17, 20_000)
    assert sum(map(reference, texts)) > 1000  # the texts do reach both answers
    assert [t for t in texts if speaks_to_anastrozole(t) != reference(t)] == []


def test_fast_split_equals_the_reference_split() -> None:
    rnd = random.Random(5)
    alphabet = "a. ;!?\n\t\r\x0b\x0c\u2028\u00a0x"
    texts = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 30))) for _ in range(20_000)]
    assert [t for t in texts if safety._SENTENCE.split(t) != _SENTENCE.split(t)] == []


def test_the_folded_letters_are_names_of_the_drug_too() -> None:
    # A long s folds to "s" under IGNORECASE: no shortcut may skip such a text.
    text = "Stop the anaſtrozole."
    assert reference(text)
    assert speaks_to_anastrozole(text)


def test_a_name_across_a_line_break_is_in_no_sentence() -> None:
    text = "Stop the aromatase\ninhibitor."
    assert not reference(text)
    assert not speaks_to_anastrozole(text)


def test_advice_in_a_later_line_is_found() -> None:
    text = "Anastrozole can thin bone.\nNo advice here.\nIt notes anastrozole; hold the anastrozole."
    assert reference(text)
    assert speaks_to_anastrozole(text)
