"""Servers that do only part of Osteoguard's work, for bench/ceiling.py.

    uvicorn --factory bench.parts:make_rules_app ...           # the floor plus the rule engine
    python bench/parts.py --replay facts,rules,cards serve ...  # Osteoguard, steps replayed

``make_rules_app`` makes the floor's endpoint (bench/floor.py: parse the JSON body, return a fixed
card) that also evaluates the typical request's facts on durable_rules, through Osteoguard's
own adapter (service/engine/adapter.py), once per request: what the rule engine alone adds
to the floor.

``--replay`` serves Osteoguard itself (`osteoguard serve`, one worker, every other step real:
the HTTP layers and limits, validation, the prefetch, snoozes, the audit, the access line)
with the named steps answered, at no cost, from the first call of the same request (the same
``hookInstance``; the start-up warm-up is another request): ``facts`` (FHIR to facts),
``rules`` (the durable_rules evaluation), ``cards`` (building and checking the cards; each
replayed card and suggestion gets new uuids, so every audit record is a new card). The
benchmark sends one request over and over, so its first call's answer is every call's.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.floor import CARD  # noqa: E402
from bench.requests import payload  # noqa: E402
from cds_hooks.models import Card  # noqa: E402
from cds_hooks.uuids import uuid4_str  # noqa: E402
from service.engine.adapter import RuleEngine  # noqa: E402
from service.pipeline.record import Issued  # noqa: E402
from service.pipeline.registry import Call, Registry  # noqa: E402
from service.ruleset.loader import load_ruleset  # noqa: E402
from service.ruleset.schema import Fact, Firing  # noqa: E402
from service.settings import PACKAGED_RULES_DIR  # noqa: E402

SERVICE = "anastrozole-bone-order-select"
STEPS = ("facts", "rules", "cards")


def typical_facts() -> tuple[RuleEngine, list[Fact]]:
    """The packaged rule set's engine, and the facts Osteoguard derives for the typical request."""
    ruleset = load_ruleset(PACKAGED_RULES_DIR)
    engine = RuleEngine(ruleset)
    registry = Registry(ruleset, engine)
    call = registry.validate(registry.look_up(SERVICE), orjson.loads(payload("typical")))
    if not asyncio.run(registry.about_anastrozole(call)):
        raise SystemExit("the typical request is not about anastrozole")
    facts = registry.derive_facts(call, asyncio.run(registry.gather(call)))
    if not engine.evaluate(facts):
        raise SystemExit("the typical request's facts fire no rule")
    return engine, facts


def make_rules_app() -> FastAPI:
    # uvicorn calls an app factory inside its running event loop, where asyncio.run cannot.
    with ThreadPoolExecutor(1) as pool:
        engine, facts = pool.submit(typical_facts).result()
    gc.freeze()  # as Osteoguard after its warm-up: the start-up heap is not scanned again
    app = FastAPI()

    @app.post("/cds-services/{service_id}")
    async def hook(service_id: str, request: Request) -> JSONResponse:
        await request.json()
        engine.evaluate(facts)
        return JSONResponse(CARD)

    return app


def fresh_uuids(card: Card) -> Card:
    suggestions = [s.model_copy(update={"uuid": uuid4_str()}) for s in card.suggestions]
    return card.model_copy(update={"uuid": uuid4_str(), "suggestions": suggestions})


def replay(steps: set[str]) -> None:
    """Answer the named pipeline steps from the first call of the same request (the module
    docstring). Keyed by the request's ``hookInstance``: the service's start-up warm-up is a
    call too, of another request, and must not become the benchmark's answer."""
    saved: dict[tuple[str, str], Any] = {}

    def replayed(step: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def answer(self: Registry, call: Call, *args: Any) -> Any:
            key = (step, call.request.hookInstance)
            if key not in saved:
                saved[key] = real(self, call, *args)
            return saved[key]

        return answer

    replayed_facts = replayed("facts", Registry.derive_facts)
    replayed_rules = replayed("rules", Registry.evaluate)
    replayed_cards = replayed("cards", Registry.build_cards)

    def fresh_cards(self: Registry, call: Call, facts: list[Fact], firings: list[Firing]) -> list[Issued]:
        # Replayed cards get new uuids, so every audit record is a new card.
        return [
            dataclasses.replace(i, card=fresh_uuids(i.card))
            for i in replayed_cards(self, call, facts, firings)
        ]

    if "facts" in steps:
        Registry.derive_facts = replayed_facts  # type: ignore[method-assign]
    if "rules" in steps:
        Registry.evaluate = replayed_rules  # type: ignore[method-assign]
    if "cards" in steps:
        Registry.build_cards = fresh_cards  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser(description="osteoguard, with pipeline steps replayed")
    parser.add_argument("--replay", default="", help=f"comma-separated, of: {', '.join(STEPS)}")
    args, rest = parser.parse_known_args()
    steps = {s for s in args.replay.split(",") if s}
    if steps - set(STEPS):
        parser.error(f"--replay: unknown steps {sorted(steps - set(STEPS))}")
    # One worker only: the patches live in this process, where uvicorn runs a single worker;
    # more would be spawned processes without them, and measure plain Osteoguard.
    if any(a == "--workers" or a.startswith("--workers=") for a in rest):
        parser.error("--replay serves one worker: leave out --workers")
    replay(steps)
    from service.cli import main as osteoguard

    return osteoguard(rest)


if __name__ == "__main__":
    sys.exit(main())
