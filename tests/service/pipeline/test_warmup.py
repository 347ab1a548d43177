"""The start-up warm-up: it exercises the card path, and leaves no trace anywhere."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from service.app import create_app
from service.engine.adapter import RuleEngine
from service.pipeline.record import Recorder
from service.pipeline.registry import Registry, utc_now
from service.pipeline.warmup import _request, warm_up
from service.ruleset.model import RuleSet
from service.store.database import Store
from tests.conftest import make_settings


def test_the_synthetic_request_reaches_the_update_suggestions(ruleset: RuleSet, engine: RuleEngine) -> None:
    # The cold part is validating a draft as FHIR R4, which only update suggestions do.
    registry = Registry(ruleset, engine)
    response = asyncio.run(registry.call("anastrozole-bone-order-sign", _request(registry)))
    low = next(c for c in response.cards if c.source.topic and c.source.topic.code == "low-estradiol")
    assert [a.type for s in low.suggestions for a in s.actions] == ["update", "update"]
    assert asyncio.run(warm_up(registry)) == len(response.cards)


def test_the_start_up_heap_is_frozen_out_of_the_collector(ruleset: RuleSet, engine: RuleEngine) -> None:
    # Full collections walked every start-up object; a large request set one off every few calls.
    asyncio.run(warm_up(Registry(ruleset, engine)))
    frozen = gc.get_freeze_count()
    assert frozen > 0
    asyncio.run(warm_up(Registry(ruleset, engine)))
    assert gc.get_freeze_count() == frozen  # once a process: later objects are not start-up ones


def test_a_registry_with_a_store_is_refused(ruleset: RuleSet, engine: RuleEngine, tmp_path: Path) -> None:
    registry = Registry(ruleset, engine, recorder=Recorder(Store(f"sqlite:///{tmp_path}/og.db"), utc_now))
    with pytest.raises(ValueError, match="no store"):
        asyncio.run(warm_up(registry))


def test_start_up_counts_no_cards_and_audits_nothing(tmp_path: Path) -> None:
    def low_estradiol_cards() -> float:
        labels = {"rule_id": "low-estradiol", "indicator": "warning"}
        return REGISTRY.get_sample_value("osteoguard_cards_total", labels) or 0.0

    before = low_estradiol_cards()
    with TestClient(create_app(make_settings(tmp_path))) as client:
        assert client.get("/readyz").status_code == 200  # started, so warmed up
        assert low_estradiol_cards() == before
    # Shutdown has written out the audit queue: anything the warm-up queued would be here.
    with sqlite3.connect(tmp_path / "osteoguard.db") as db:
        assert db.execute("SELECT count(*) FROM cards").fetchone() == (0,)


def test_a_rule_set_that_fails_the_warm_up_does_not_stop_start_up(
    ruleset: RuleSet, engine: RuleEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(ruleset, engine)

    async def broken(service_id: str, payload: object) -> None:
        raise AttributeError("source")  # as a card text naming evidence the patient lacks

    monkeypatch.setattr(registry, "call", broken)
    assert asyncio.run(warm_up(registry)) == 0
    assert "warm-up evaluation failed: AttributeError" in caplog.text


def test_the_lifespan_warms_up_with_a_registry_that_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.app as main_module

    used: list[Registry] = []

    async def spy(registry: Registry) -> int:
        used.append(registry)
        return await warm_up(registry)

    monkeypatch.setattr(main_module, "warm_up", spy)
    with TestClient(create_app(make_settings(tmp_path))) as client:
        assert client.get("/readyz").status_code == 200
        served = client.app.state.registry  # type: ignore[attr-defined]
    assert len(used) == 1 and used[0] is not served
    assert used[0].store is None and used[0].fetcher is None and used[0].audit is None
    assert used[0].engine is served.engine  # the compiled rules are the ones served
