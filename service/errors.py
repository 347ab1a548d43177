"""Every error Osteoguard can answer with, and how it is rendered.

Exception tree::

    OsteoguardError                  (500, code "internal")     root; never carries patient data
    ├── RequestError                 (400, "invalid")            the client sent something unusable
    │   ├── InvalidJson              (400, "invalid")            body is not JSON / not an object
    │   ├── WrongHook                (400, "invalid")            hook does not match the service
    │   └── BodyTooLarge             (413, "too-costly")         body over the configured limit
    ├── UnknownService               (404, "not-found")          no service with that id
    ├── PrefetchUnavailable          (412, "incomplete")         needed data neither prefetched nor fetchable
    ├── EngineError                  (500, "exception")          durable_rules failed; evaluation aborted
    └── RuleSetError                 (config, never an HTTP reply) rule files do not validate

Foreign exceptions (pydantic, orjson, durable_rules) are translated where they are caught,
with ``raise ... from exc``. :func:`operation_outcome` is the single renderer: every error on
a CDS endpoint becomes a FHIR OperationOutcome whose ``details.coding`` carries a stable
Osteoguard error code (``OG-…``), so support tickets and log searches stay stable.
"""

from __future__ import annotations

from typing import Any

ERROR_CODE_SYSTEM = "urn:osteoguard:error"


class OsteoguardError(Exception):
    """Root of every error the service raises on purpose."""

    status_code = 500
    issue_code = "exception"
    error_code = "OG-500"

    def __init__(self, message: str, *, diagnostics: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.diagnostics = diagnostics


class RequestError(OsteoguardError):
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


class UnknownService(OsteoguardError):
    """No CDS service is registered under the requested id."""

    status_code = 404
    issue_code = "not-found"
    error_code = "OG-404"


class PrefetchUnavailable(OsteoguardError):
    """Data the rules need was neither prefetched nor obtainable from ``fhirServer``."""

    status_code = 412
    issue_code = "incomplete"
    error_code = "OG-412"

    def __init__(self, keys: list[str], reason: str) -> None:
        keys_text = ", ".join(sorted(keys))
        super().__init__(f"Missing prefetch data for: {keys_text}. {reason}")
        self.keys = sorted(keys)
        self.reason = reason


class EngineError(OsteoguardError):
    """The rule engine failed during an evaluation (the evaluation is abandoned)."""

    status_code = 500
    issue_code = "exception"
    error_code = "OG-500-ENGINE"


class RuleSetError(OsteoguardError):
    """The rule files do not validate. ``problems`` holds ``file:line: message`` strings."""

    error_code = "OG-RULES"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems) if problems else "invalid rule set")
        self.problems = problems


def operation_outcome(error: OsteoguardError) -> dict[str, Any]:
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
