"""The one place errors become HTTP answers: every error is rendered by :func:`render`.

Errors raised on purpose (:mod:`service.errors`) carry their status and code. Framework errors
are mapped to the same tree: an unknown path to ``UnknownService`` (404), a wrong method to
``MethodNotAllowed`` (405), FastAPI's own request validation to ``RequestError`` (400).
Anything else is a bug: it is logged by type only (a foreign message can echo request content)
and answered as a bare ``OG-500``, never a stack trace.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import (
    AuthError,
    MethodNotAllowed,
    RequestError,
    ServiceError,
    UnknownService,
    operation_outcome,
)
from service.http.body import JsonResponse
from service.metrics import count_jwt_rejection, endpoint_labels

log = logging.getLogger("osteoguard")


def render(error: ServiceError) -> JsonResponse:
    """An error as its OperationOutcome, with its status (and a Bearer challenge for a 401)."""
    response = JsonResponse(operation_outcome(error), status_code=error.status_code)
    if isinstance(error, AuthError):
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def framework_error(request: Request, exc: StarletteHTTPException) -> ServiceError:
    """Starlette's HTTP errors (no route, wrong method) as errors of our tree."""
    if exc.status_code == 404:
        return UnknownService(f"no resource at {request.url.path}")
    if exc.status_code == 405:
        return MethodNotAllowed(f"{request.method} is not allowed here")
    error = RequestError(str(exc.detail))
    error.status_code = exc.status_code
    return error


def install(app: FastAPI, service_ids: frozenset[str]) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(AuthError)
    async def on_auth_error(request: Request, exc: AuthError) -> JsonResponse:
        # The reason is for operators; the caller learns nothing about why.
        log.warning(
            "request refused: %s",
            exc.reason,
            # The endpoint kind, not the raw path: a client can put anything in a path.
            extra={
                "iss": exc.iss,
                "jti": exc.jti,
                "endpoint": endpoint_labels(request.url.path, service_ids)[0],
            },
        )
        count_jwt_rejection(exc.reason)
        return render(exc)

    @app.exception_handler(ServiceError)
    async def on_error(request: Request, exc: ServiceError) -> JsonResponse:
        if exc.status_code >= 500:
            log.error("request failed: %s (%s)", exc.error_code, type(exc.__cause__).__name__)
        return render(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JsonResponse:
        return render(framework_error(request, exc))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JsonResponse:
        return render(RequestError("invalid request"))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JsonResponse:
        # The type only: messages of foreign exceptions can echo request content.
        log.error("unexpected error: %s", type(exc).__name__)
        return render(ServiceError("internal error; the request was not evaluated"))
