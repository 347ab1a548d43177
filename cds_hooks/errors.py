"""The errors of the CDS Hooks protocol layer, and their one rendering as an OperationOutcome.

Exception tree (the service adds its own branches; ``service.errors`` draws the whole tree)::

    ServiceError                  500  OG-500        root: an error answered on purpose
    ├── RequestError              400  OG-400        the client sent something unusable
    │   ├── InvalidJson           400  OG-400-JSON   body is not JSON, or not a JSON object
    │   ├── WrongHook             400  OG-400-HOOK   hook does not match the service
    │   ├── BodyTooLarge          413  OG-413        body over the configured limit
    │   └── MethodNotAllowed      405  OG-405        the endpoint does not answer that method
    ├── AuthError                 401  OG-401        not authenticated (reason: log only)
    ├── UnknownService            404  OG-404        no service (or resource) at that path
    │   └── UnknownCard           404  OG-404-CARD   feedback names a card never issued
    ├── PrefetchUnavailable       412  OG-412        needed data neither prefetched nor fetchable
    └── ConfigurationError        —    OG-CONFIG     bad configuration: start-up refuses, exit 2
        └── TrustedClientsError   —    OG-CLIENTS    the trusted-clients file is missing or broken

Foreign exceptions (pydantic, orjson, httpx, PyJWT) are translated where they are caught, with
``raise ... from exc``. :func:`operation_outcome` is the single renderer: every error on a CDS
endpoint becomes a FHIR OperationOutcome whose ``details.coding`` carries the error's stable
code, so support tickets and log searches stay stable. Messages never carry patient data.
"""

from __future__ import annotations

from typing import Any, overload

ERROR_CODE_SYSTEM = "urn:osteoguard:error"


class ServiceError(Exception):
    """Root of every error a CDS service raises on purpose."""

    status_code = 500
    issue_code = "exception"
    error_code = "OG-500"

    def __init__(self, message: str, *, diagnostics: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.diagnostics = diagnostics


class RequestError(ServiceError):
    """The request is malformed: missing or mistyped required fields."""

    status_code = 400
    issue_code = "invalid"
    error_code = "OG-400"


class InvalidJson(RequestError):
    """The body is not valid JSON, or not a JSON object."""

    error_code = "OG-400-JSON"


class WrongHook(RequestError):
    """The request's ``hook`` is not the hook the called service answers."""

    error_code = "OG-400-HOOK"


class BodyTooLarge(RequestError):
    """The body exceeds the configured size limit."""

    status_code = 413
    issue_code = "too-costly"
    error_code = "OG-413"


class MethodNotAllowed(RequestError):
    """The endpoint exists but does not answer this HTTP method."""

    status_code = 405
    issue_code = "not-supported"
    error_code = "OG-405"


LOGGED_VALUE_CHARS = 200


@overload
def _bounded(value: str) -> str: ...
@overload
def _bounded(value: None) -> None: ...
def _bounded(value: str | None) -> str | None:
    """At most :data:`LOGGED_VALUE_CHARS` characters of a client-supplied value, marked if cut."""
    if value is None or len(value) <= LOGGED_VALUE_CHARS:
        return value
    return value[:LOGGED_VALUE_CHARS] + f"…[{len(value)} chars]"


class AuthError(ServiceError):
    """The request is not authenticated. ``reason`` is for the log only, never the client."""

    status_code = 401
    issue_code = "login"
    error_code = "OG-401"

    def __init__(self, reason: str, *, iss: str | None = None, jti: str | None = None) -> None:
        super().__init__("authentication required")
        # iss and jti come from an unverified token: a caller could send a megabyte of either,
        # so what reaches the log is bounded (a log line per refusal stays small).
        self.reason = _bounded(reason)
        self.iss = _bounded(iss)
        self.jti = _bounded(jti)


class UnknownService(ServiceError):
    """No CDS service (or other resource) is registered under the requested path."""

    status_code = 404
    issue_code = "not-found"
    error_code = "OG-404"


class UnknownCard(UnknownService):
    """Feedback names a card this service never issued."""

    error_code = "OG-404-CARD"


class PrefetchUnavailable(ServiceError):
    """Data the rules need was neither prefetched nor obtainable from ``fhirServer``."""

    status_code = 412
    issue_code = "incomplete"
    error_code = "OG-412"

    def __init__(self, keys: list[str], reason: str) -> None:
        keys_text = ", ".join(sorted(keys))
        super().__init__(f"Missing prefetch data for: {keys_text}. {reason}")
        self.keys = sorted(keys)
        self.reason = reason


class ConfigurationError(ServiceError):
    """A setting or file the service needs at start-up is missing or invalid (never an HTTP reply)."""

    error_code = "OG-CONFIG"


class TrustedClientsError(ConfigurationError):
    """The trusted-clients file is missing or invalid."""

    error_code = "OG-CLIENTS"


def operation_outcome(error: ServiceError) -> dict[str, Any]:
    """Render an error as a FHIR R4 OperationOutcome (no nulls, no stack trace)."""
    issue: dict[str, Any] = {
        "severity": "error" if error.status_code < 500 else "fatal",
        "code": error.issue_code,
        "details": {
            "coding": [{"system": ERROR_CODE_SYSTEM, "code": error.error_code}],
            "text": error.message,
        },
    }
    if error.diagnostics:
        issue["diagnostics"] = error.diagnostics
    if isinstance(error, PrefetchUnavailable):
        issue["expression"] = [f"prefetch.{key}" for key in error.keys]
    return {"resourceType": "OperationOutcome", "issue": [issue]}
