"""Reading a request body as JSON within the size limit (service.http.body.read_json)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import ClientDisconnect, Request

from service.errors import BodyTooLarge
from service.http.body import read_json


def request(messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    app = SimpleNamespace(state=SimpleNamespace(settings=SimpleNamespace(max_body_bytes=10)))
    queue = iter(messages)

    async def receive() -> dict[str, Any]:
        return next(queue)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers or [], "app": app}
    return Request(scope, receive)


def test_a_body_in_several_chunks_is_parsed_whole() -> None:
    chunks = [{"type": "http.request", "body": b'{"a"', "more_body": True}]
    chunks.append({"type": "http.request", "body": b": 1}", "more_body": False})
    assert asyncio.run(read_json(request(chunks))) == {"a": 1}


def test_a_streamed_body_over_the_limit_is_refused_without_a_declared_length() -> None:
    chunks = [{"type": "http.request", "body": b"[1, 2, 3, ", "more_body": True}]
    chunks.append({"type": "http.request", "body": b"4]", "more_body": False})
    with pytest.raises(BodyTooLarge):
        asyncio.run(read_json(request(chunks)))


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    with pytest.raises(BodyTooLarge):
        asyncio.run(read_json(request([], [(b"content-length", b"11")])))


def test_a_client_gone_before_its_body_is_in_is_a_disconnect() -> None:
    with pytest.raises(ClientDisconnect):
        asyncio.run(read_json(request([{"type": "http.disconnect"}])))
