"""The answer never depends on the order in which a bundle lists its entries."""

from __future__ import annotations

import asyncio
import copy
import random
from typing import Any

import pytest

from service.pipeline.registry import Registry
from service.ruleset.scenarios import load_cases, roll_dates
from service.settings import PACKAGED_RULES_DIR
from tests.builders import SERVICE_FOR_HOOK, obs

CASES = load_cases(PACKAGED_RULES_DIR)


def shuffled(request: dict[str, Any], seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    out = copy.deepcopy(request)
    context = out["context"]
    for value in [*out.get("prefetch", {}).values(), context.get("draftOrders"), context.get("medications")]:
        if isinstance(value, dict) and isinstance(value.get("entry"), list):
            rng.shuffle(value["entry"])
    return out


def answer(registry: Registry, request: dict[str, Any]) -> list[tuple[str, str]]:
    response = asyncio.run(registry.call(SERVICE_FOR_HOOK[request["hook"]], request))
    return sorted((c.source.topic.code, c.summary) for c in response.cards if c.source.topic)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule_id}/{c.path.stem}" for c in CASES])
def test_every_scenario_answers_the_same_for_shuffled_bundles(case: Any, registry: Registry) -> None:
    request = roll_dates(case.request, registry.today())
    baseline = answer(registry, request)
    for seed in range(6):
        assert answer(registry, shuffled(request, seed)) == baseline


def test_latest_result_wins_whatever_the_listing_order(registry: Registry) -> None:
    from tests.builders import order_sign

    req = order_sign("ord-1", e2=None)
    older_low = obs("e2-old", "ord-1", "2243-4", 6.0, "pg/mL", 90)
    newer_ok = obs("e2-new", "ord-1", "2243-4", 25.0, "pg/mL", 20)
    for entries in ([older_low, newer_ok], [newer_ok, older_low]):
        req["prefetch"]["estradiol"]["entry"] = [{"resource": r} for r in entries]
        assert "low-estradiol" not in [code for code, _ in answer(registry, req)]
