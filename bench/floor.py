"""The floor: a bare FastAPI endpoint that parses the JSON body and returns a fixed card.

It is what one uvicorn worker with FastAPI can serve at all for this request: the framework,
the JSON parse, one card serialised. ``bench/run.py`` measures Osteoguard against it.

``jwt_app`` is the same endpoint after what CDS Hooks auth alone costs: PyJWT verifying the
request's RS384 token (signature, aud, exp, required claims) and a replay check of its jti
against a set. The key and audience come from BENCH_JWK (a public JWK, JSON) and
BENCH_AUDIENCE. ``bench/run.py --full`` measures it.
"""

import functools
import os
from typing import Any

import jwt
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from jwt.algorithms import RSAAlgorithm

# About the size and shape of the baseline-dexa card Osteoguard returns for the typical request.
CARD: dict[str, Any] = {
    "cards": [
        {
            "uuid": "0b7e7c2e-3f4b-4f51-9d7a-6d9a2f1c5e11",
            "summary": "Baseline DXA due: anastrozole accelerates bone loss",
            "detail": (
                "Aromatase inhibitors lower estradiol and speed up bone loss. The last DXA is more "
                "than two years old; guidelines advise a baseline DXA when anastrozole starts."
            ),
            "indicator": "warning",
            "source": {
                "label": "Osteoguard",
                "url": "https://osteoguard.example.org/docs/rules/baseline-dexa",
                "topic": {"system": "https://osteoguard.example.org/rules", "code": "baseline-dexa"},
            },
            "suggestions": [
                {
                    "label": "Order a DXA scan",
                    "uuid": "5c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
                    "actions": [
                        {
                            "type": "create",
                            "description": "DXA scan, hip and spine",
                            "resource": {
                                "resourceType": "ServiceRequest",
                                "status": "draft",
                                "intent": "proposal",
                                "code": {"coding": [{"system": "http://loinc.org", "code": "38269-7"}]},
                                "subject": {"reference": "Patient/example"},
                            },
                        }
                    ],
                }
            ],
            "selectionBehavior": "at-most-one",
            "overrideReasons": [{"code": "not-indicated", "display": "Not indicated for this patient"}],
            "links": [
                {
                    "label": "Why this card",
                    "url": "https://osteoguard.example.org/docs/rules/baseline-dexa",
                    "type": "absolute",
                }
            ],
        }
    ]
}

app = FastAPI()


@app.post("/cds-services/{service_id}")
async def hook(service_id: str, request: Request) -> JSONResponse:
    await request.json()
    return JSONResponse(CARD)


jwt_app = FastAPI()
_seen: set[str] = set()


@functools.cache
def _key() -> Any:
    return RSAAlgorithm.from_jwk(os.environ["BENCH_JWK"])


@jwt_app.post("/cds-services/{service_id}")
async def hook_with_jwt(service_id: str, request: Request) -> JSONResponse:
    try:
        claims = jwt.decode(
            request.headers.get("authorization", "").removeprefix("Bearer "),
            _key(),
            algorithms=["RS384"],
            audience=os.environ["BENCH_AUDIENCE"],
            options={"require": ["exp", "iat", "iss", "jti"]},
        )
    except jwt.PyJWTError:
        return JSONResponse({"error": "unauthorized"}, status_code=401)
    if claims["jti"] in _seen:
        return JSONResponse({"error": "replayed"}, status_code=401)
    _seen.add(claims["jti"])
    await request.json()
    return JSONResponse(CARD)
