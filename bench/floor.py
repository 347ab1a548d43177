"""The floor: a bare FastAPI endpoint that only parses the JSON body (what the framework costs)."""

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()


@app.post("/cds-services/{service_id}")
async def hook(service_id: str, request: Request) -> JSONResponse:
    await request.json()
    return JSONResponse({"cards": []})
