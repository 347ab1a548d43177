"""The durable_rules adapter: validation, session hygiene, isolation under threads, failures."""

from __future__ import annotations

import enum
import threading
from typing import Any

import pytest

from service.engine import adapter as engine_module
from service.engine.adapter import RuleEngine
from service.errors import EngineError
from service.ruleset.model import RuleSet
from service.ruleset.schema import Fact


def context(sex: str = "male", testosterone: int = 1) -> Fact:
    return Fact(
        "context",
        {
            "anastrozole": 1,
            "has_draft": 1,
            "dose_lowered": 0,
            "hook": "order-sign",
            "sex": sex,
            "on_testosterone": testosterone,
            "on_bone_agent": 0,
            "age_known": 1,
            "age": 66,
            "trt_first_days": 400,
        },
    )


class _Count(enum.IntEnum):
    ONE = 1


def facts_for(e2: float, sex: str = "male") -> list[Fact]:
    return [
        context(sex),
        Fact(
            "estradiol",
            {"count": 1, "ordered": 0, "days_ago": 10, "value": e2, "comparator": "=", "newer_unread": 0},
        ),
        Fact("vitamin_d", {"count": 1, "ordered": 0, "days_ago": 10, "value": 40.0, "comparator": "="}),
        Fact("dxa", {"count": 1, "ordered": 0, "days_ago": 10}),
        Fact("testosterone", {"count": 1, "ordered": 0, "days_ago": 10, "value": 550.0, "comparator": "="}),
        Fact("bone", {"count": 1, "days_ago": 10, "tscore": -0.2}),
        Fact("safety", SAFE_LABS),
    ]


SAFE_LABS = {
    "renal_known": 1,
    "renal_low": 0,
    "renal_severe": 0,
    "renal_ordered": 0,
    "calcium_known": 1,
    "calcium_low": 0,
    "calcium_ordered": 0,
    "vitd_known": 1,
    "vitd_low": 0,
    "vitd_ordered": 0,
    "unknown": 0,
}


def rule_ids(firings: list[Any]) -> list[str]:
    return [f.rule_id for f in firings]


@pytest.mark.parametrize(
    "fields",
    [
        {"count": "1"},  # numeric string: the engine would coerce it
        {"count": True},  # bool: the engine treats it as 1
        {"count": float("nan")},
        {"count": 1, "comparator": "~"},  # text outside its closed set
        {"count": 1, "colour": 3},  # field not in the schema
        {"count": 1, "ordered": 1.0},  # a flag is the int 0 or 1
        {"count": _Count.ONE},  # an int subclass: refused like a bool, not guessed at
    ],
)
def test_invalid_facts_are_refused(engine: RuleEngine, fields: dict[str, Any]) -> None:
    with pytest.raises(EngineError):
        engine.evaluate([context("male"), Fact("estradiol", fields)])


def test_unknown_fact_kind_is_refused(engine: RuleEngine) -> None:
    with pytest.raises(EngineError):
        engine.evaluate([context("male"), Fact("weight", {"count": 1})])


def test_empty_fact_list_is_refused(engine: RuleEngine) -> None:
    with pytest.raises(EngineError):
        engine.evaluate([])


def test_firings_carry_the_facts_they_matched(engine: RuleEngine) -> None:
    facts = facts_for(8.0)
    firings = engine.evaluate(facts)
    assert rule_ids(firings) == ["low-estradiol"]
    assert firings[0].matched["e2"] is facts[1]
    assert firings[0].matched["ctx"] is facts[0]


def test_more_evaluations_than_the_engine_session_limit(engine: RuleEngine) -> None:
    # durable_rules refuses session 1025 when sessions leak; every evaluation deletes its own.
    for i in range(1100):
        assert rule_ids(engine.evaluate(facts_for(8.0 if i % 2 else 20.0))) == (
            ["low-estradiol"] if i % 2 else []
        )


def test_concurrent_threads_each_get_their_own_answer(engine: RuleEngine) -> None:
    errors: list[str] = []

    def worker(n: int) -> None:
        for i in range(150):
            low = (n + i) % 3 == 0
            sex = "female" if (n + i) % 5 == 0 else "male"
            got = rule_ids(engine.evaluate(facts_for(7.5 if low else 30.0, sex)))
            want = ["low-estradiol"] if low and sex == "male" else []
            if got != want:
                errors.append(f"thread {n} iteration {i}: {got} != {want}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_engine_failure_becomes_engine_error(engine: RuleEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(handle: int, payload: str) -> Any:
        raise Exception("Could not assert facts, error code: 101")

    monkeypatch.setattr(engine_module.dre, "assert_facts", broken)
    with pytest.raises(EngineError):
        engine.evaluate(facts_for(8.0))


def test_session_is_deleted_when_draining_fails(engine: RuleEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    deleted: list[str] = []
    real_delete = engine_module.dre.delete_state

    def failing_drain(handle: int, offset: int) -> Any:
        raise Exception("error code: 307")

    def spy_delete(handle: int, sid: str) -> Any:
        deleted.append(sid)
        return real_delete(handle, sid)

    monkeypatch.setattr(engine_module.dre, "start_action_for_state", failing_drain)
    monkeypatch.setattr(engine_module.dre, "delete_state", spy_delete)
    with pytest.raises(EngineError):
        engine.evaluate(facts_for(8.0))
    assert len(deleted) == 1


def test_closed_engine_refuses_to_evaluate(ruleset: RuleSet) -> None:
    eng = RuleEngine(ruleset)
    eng.close()
    eng.close()  # idempotent
    with pytest.raises(EngineError):
        eng.evaluate(facts_for(8.0))


def test_two_engines_do_not_share_state(ruleset: RuleSet) -> None:
    first, second = RuleEngine(ruleset), RuleEngine(ruleset)
    try:
        assert rule_ids(first.evaluate(facts_for(8.0))) == ["low-estradiol"]
        assert rule_ids(second.evaluate(facts_for(30.0))) == []
    finally:
        first.close()
        second.close()


def test_tiny_and_huge_numbers_are_taken_in(engine: RuleEngine) -> None:
    # Python writes 0.00001 as 1e-05, which durable_rules cannot parse: it would silently drop
    # that fact and every later one. Facts are written in plain decimal notation instead.
    facts = facts_for(8.0)
    facts[2] = Fact(
        "vitamin_d", {"count": 1, "ordered": 0, "days_ago": 10, "value": 0.00001, "comparator": "="}
    )
    facts[4] = Fact("bone", {"count": 1, "days_ago": 1e-05, "tscore": -3.0})
    fired = rule_ids(engine.evaluate(facts))
    assert "osteoporosis-antiresorptive" in fired and "vitamin-d" in fired


def test_dropped_facts_are_detected(engine: RuleEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    real = engine_module._encoded

    def exponent_notation(fact: Fact, fid: int, sid: str) -> str:
        return real(fact, fid, sid).replace('"value":40.0', '"value":4e1')  # unparseable for the engine

    monkeypatch.setattr(engine_module, "_encoded", exponent_notation)
    with pytest.raises(EngineError, match="did not take in every fact"):
        engine.evaluate(facts_for(8.0))
