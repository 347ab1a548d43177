"""The floor: a bare FastAPI endpoint that only parses the JSON body (what the framework costs).

``jwt_app`` is the same endpoint after what CDS Hooks auth alone costs: PyJWT verifying the
request's RS384 token (signature, aud, exp, required claims) and a replay check of its jti
against a set. The key and audience come from BENCH_JWK (a public JWK, JSON) and
BENCH_AUDIENCE.
"""

import functools
import os
from typing import Any

import jwt
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from jwt.algorithms import RSAAlgorithm

app = FastAPI()


@app.post("/cds-services/{service_id}")
async def hook(service_id: str, request: Request) -> JSONResponse:
    await request.json()
    return JSONResponse({"cards": []})


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
    return JSONResponse({"cards": []})
