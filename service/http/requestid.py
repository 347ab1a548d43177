"""The request id of every HTTP request: taken from ``X-Request-ID`` or made up. The
:class:`service.http.edge.Edge` layer echoes it back and sets :data:`REQUEST_ID`, which every log
line written while the request is handled carries."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

from starlette.types import Scope

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")  # an id from outside must not smuggle data into logs


def request_id(scope: Scope) -> str:
    """The caller's ``X-Request-ID`` when it is a safe token, else a new random one."""
    given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
    return given if _SAFE.match(given) else uuid.uuid4().hex
