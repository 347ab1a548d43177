"""The only module that touches durable_rules. Everything about its hazards is contained here.

durable_rules 2.0.28 is abandoned and has measured failure modes (shared/reference/durable-rules.md).
How each is avoided:

* Timer threads of ``engine.Host`` crash with several live sessions, and ``durable.lang``'s lazy
  global host races under threads: we use only the raw C API (``durable_rules_engine``), so no
  Host and no background thread ever exists.
* ``delete_state`` frees an uninitialised pointer when no activation was started in a session:
  a sentinel rule matches the state fact every session gets, so every session has an activation.
* ``assert_facts([])`` returns a garbage state offset: an empty fact list is refused.
* Oversized facts, and numbers it cannot parse (Python writes 0.00001 as ``1e-05``), are
  silently dropped with every later fact; numeric strings and booleans are coerced to numbers:
  facts are validated against :mod:`service.ruleset.schema`, numbers are written in plain decimal
  notation, and a final marker fact must come back matched, or the evaluation fails.
* 1024 live sessions is a hard limit and sessions share state through 32-bit sid hashes: one
  process-wide lock serialises evaluations, each in a fresh uuid4 session deleted in ``finally``,
  so at most one session is ever alive.
* ``$not`` depends on fact order: rule files cannot use it (the loader refuses it); absence
  arrives as positive summary facts (``count: 0``).

The evaluation is synchronous and short (about 100 µs); async callers call it directly on the
event loop thread, with no ``await`` between assert, drain and delete.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import durable_rules_engine as dre
import orjson

from cds_hooks.uuids import uuid4_hex
from service.errors import EngineError
from service.ruleset.model import RuleSet
from service.ruleset.schema import FACT_FIELDS, FLAG, NUMBER, TEXT, TEXT_VALUES, Fact, Firing

SENTINEL = "$sentinel"
END = "$end"  # matched by its own rule; if it is missing, the engine dropped facts
MAX_FACTS = 64  # far below the engine's limits; we assert one fact per kind
_names = itertools.count(1)


def _encoded(fact: Fact, fid: int, sid: str) -> str:
    """The fact as one JSON object for ``assert_facts``, refusing anything the engine would
    misread (coercion, silent drops). Validation and encoding are one pass over the fields.

    Keys are schema identifiers and strings come from closed sets (or are our own uuid hex),
    so nothing needs escaping; numbers are written in plain decimal notation. Exact type
    checks: a bool, or any subclass of int or float, is refused rather than guessed at.
    """
    schema = FACT_FIELDS.get(fact.kind)
    if schema is None:
        raise EngineError(f"fact kind {fact.kind!r} is not in the fact schema")
    out = f'{{"kind":"{fact.kind}","fid":{fid},"sid":"{sid}"'
    for name, value in fact.fields.items():
        kind = schema.get(name)
        if kind is None:
            raise EngineError(f"fact {fact.kind!r} has unknown field {name!r}")
        value_type = type(value)
        if kind == NUMBER:
            if value_type is int:
                out += f',"{name}":{value}'
            elif value_type is float and math.isfinite(value):
                out += f',"{name}":{_float(value)}'
            else:
                raise EngineError(f"fact {fact.kind}.{name} must be a finite number")
        elif kind == FLAG:
            if value_type is not int or value not in (0, 1):
                raise EngineError(f"fact {fact.kind}.{name} must be 0 or 1")
            out += f',"{name}":{value}'
        elif kind == TEXT:
            allowed = TEXT_VALUES.get(name)
            if value_type is not str or (allowed is not None and value not in allowed):
                raise EngineError(f"fact {fact.kind}.{name} has an unexpected value")
            out += f',"{name}":"{value}"'
        else:
            raise EngineError(f"fact schema type {kind!r} of {fact.kind}.{name} is unknown")
    return out + "}"


def _float(value: float) -> str:
    shown = repr(value)
    # durable_rules cannot parse exponent notation ("1e-05") and drops the fact silently.
    return format(Decimal(shown), "f") if "e" in shown else shown


class RuleEngine:
    """A compiled rule set. ``evaluate`` is safe to call from any thread, one call at a time."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        definition: dict[str, Any] = {
            SENTINEL: {"all": [{"m": {"$s": 1}}]},
            END: {"all": [{"m": {"kind": END}}]},
        }
        for rule in ruleset.rules:
            for variant in rule.variants:
                definition[f"{rule.id}/{variant.name}"] = {"all": list(variant.conditions)}
        # Firings are returned in rule-file order; computed once, not per evaluation.
        self._order = {
            f"{rule.id}/{variant.name}": i
            for i, (rule, variant) in enumerate((r, v) for r in ruleset.rules for v in r.variants)
        }
        self._lock = threading.Lock()
        try:
            self._handle = dre.create_ruleset(f"{ruleset.name}-{next(_names)}", json.dumps(definition))
        except Exception as exc:  # the extension raises bare Exception with an error number
            raise EngineError(f"durable_rules refused the rule set: {exc}") from exc
        self._closed = False

    def evaluate(self, facts: Sequence[Fact]) -> list[Firing]:
        """Assert ``facts`` in a fresh session, drain every activation, delete the session.

        Returns the firings in rule-file order, at most one per rule variant.
        """
        if not facts:
            raise EngineError("refusing to evaluate an empty fact list")
        if len(facts) > MAX_FACTS:
            raise EngineError("too many facts for one evaluation")
        sid = uuid4_hex()
        encoded = [_encoded(fact, i, sid) for i, fact in enumerate(facts)]
        encoded.append(f'{{"kind":"{END}","fid":{len(facts)},"sid":"{sid}"}}')
        payload = "[" + ",".join(encoded) + "]"
        raw: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            if self._closed:
                raise EngineError("the rule engine has been closed")
            try:
                try:
                    _, offset = dre.assert_facts(self._handle, payload)
                    result = dre.start_action_for_state(self._handle, offset)
                    messages = result[1] if result else None
                    while messages:
                        raw.extend(orjson.loads(messages).items())
                        messages = dre.complete_and_start_action(self._handle, offset)
                finally:
                    dre.delete_state(self._handle, sid)
            except Exception as exc:
                raise EngineError(f"durable_rules failed during evaluation: {exc}") from exc
        if not any(name == END for name, _ in raw):
            raise EngineError("durable_rules did not take in every fact; evaluation abandoned")
        return self._firings(raw, facts, sid)

    def _firings(
        self, raw: list[tuple[str, dict[str, Any]]], facts: Sequence[Fact], sid: str
    ) -> list[Firing]:
        seen: dict[str, Firing] = {}
        for name, match in raw:
            if name in (SENTINEL, END) or name in seen:
                continue
            rule_id, _, variant = name.partition("/")
            matched: dict[str, Fact] = {}
            for alias, engine_fact in match.items():
                fid = engine_fact.get("fid")
                if engine_fact.get("sid") != sid or not isinstance(fid, int) or not 0 <= fid < len(facts):
                    # A fact from another session would mean state leaked between evaluations.
                    raise EngineError("durable_rules returned a fact from another evaluation")
                matched[alias] = facts[fid]
            seen[name] = Firing(rule_id, variant, matched)
        return sorted(seen.values(), key=lambda f: self._order[f"{f.rule_id}/{f.variant}"])

    def close(self) -> None:
        """Release the compiled rule set (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                dre.delete_ruleset(self._handle)
