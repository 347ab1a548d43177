"""The requests the benchmarks send: bench/request.json (dates relative to today), as bytes.

``typical`` is an order-select call of about 4.6 KB (compact JSON, as EHRs send it) with 10
estradiol results that fires one card (baseline-dexa: a man on testosterone, whose last DXA is
900 days old; his testosterone was checked 90 days ago, so testosterone-monitoring stays
quiet); ``large`` is the same call with 200 estradiol results. The results are copies of the
file's one estradiol Observation, each nine days older than the last.
"""

from __future__ import annotations

import copy
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from service.ruleset.scenarios import roll_dates

TEMPLATE = Path(__file__).resolve().parent / "request.json"
COUNTS = {"typical": 10, "large": 200}


def request(kind: str, today: date | None = None) -> dict[str, Any]:
    today = today or date.today()
    req: dict[str, Any] = roll_dates(json.loads(TEMPLATE.read_text(encoding="utf-8")), today)
    estradiol = req["prefetch"]["estradiol"]
    (first,) = estradiol["entry"]
    entries = []
    for i in range(COUNTS[kind]):
        entry = copy.deepcopy(first)
        resource = entry["resource"]
        resource["id"] = f"e{i}"
        resource["valueQuantity"]["value"] = 20 + i % 30
        resource["effectiveDateTime"] = (today - timedelta(days=20 + i * 9)).isoformat()
        entries.append(entry)
    estradiol["entry"] = entries
    if kind != "typical":
        # Its own hookInstance: bench/parts.py replays steps by hookInstance, and must never
        # answer one kind of request with the other's.
        req["hookInstance"] = f"{req['hookInstance']}-{kind}"
    return req


def payload(kind: str) -> bytes:
    return json.dumps(request(kind), separators=(",", ":")).encode()
