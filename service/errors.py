"""Every error Osteoguard raises on purpose, in one tree, and nothing else.

The protocol's errors come from :mod:`cds_hooks.errors`; the service adds its own branches.
Exception tree (status, stable code in the OperationOutcome)::

    ServiceError                  500  OG-500          root; never carries patient data
    ├── RequestError              400  OG-400          the client sent something unusable
    │   ├── InvalidJson           400  OG-400-JSON     body is not JSON, or not a JSON object
    │   ├── WrongHook             400  OG-400-HOOK     hook does not match the service
    │   ├── BodyTooLarge          413  OG-413          body over the configured limit
    │   └── MethodNotAllowed      405  OG-405          the endpoint does not answer that method
    ├── AuthError                 401  OG-401          not authenticated (reason: log only)
    ├── UnknownService            404  OG-404          no service (or resource) at that path
    │   └── UnknownCard           404  OG-404-CARD     feedback names a card never issued
    ├── PrefetchUnavailable       412  OG-412          needed data neither prefetched nor fetchable
    ├── StoreUnavailable          503  OG-503-STORE    the audit/feedback store cannot be used now
    │   └── SpoolFull             503  OG-503-SPOOL    neither the database nor the audit spool can
    │                                                  make a card record durable now
    ├── ConnectionLimit           503  OG-LIMIT        the HTTP server cut a connection off
    │   ├── HeaderFieldsTooLarge  431  OG-431          request line and headers over the limit
    │   ├── RequestTimeout        408  OG-408          headers or body not in within the deadline
    │   └── TooManyConnections    503  OG-503-CONN     the worker holds its most connections
    ├── Overloaded                503  OG-503-BUSY     this worker's hook calls in flight are at their bound
    ├── EngineError               500  OG-500-ENGINE   durable_rules failed; evaluation abandoned
    └── ConfigurationError        —    OG-CONFIG       bad configuration: start-up refuses, exit 2
        ├── TrustedClientsError   —    OG-CLIENTS      the trusted-clients file is missing or broken
        └── RuleSetError          —    OG-RULES        the rule files do not validate

Foreign exceptions (pydantic, orjson, httpx, SQLAlchemy, durable_rules) are translated where
they are caught, with ``raise ... from exc``. One handler (:mod:`service.http.handlers`)
renders every error with :func:`operation_outcome`; anything else is logged by type only and
answered as a bare ``OG-500``.
"""

from __future__ import annotations

from cds_hooks.errors import (
    ERROR_CODE_SYSTEM,
    AuthError,
    BodyTooLarge,
    ConfigurationError,
    InvalidJson,
    MethodNotAllowed,
    PrefetchUnavailable,
    RequestError,
    ServiceError,
    TrustedClientsError,
    UnknownCard,
    UnknownService,
    WrongHook,
    operation_outcome,
)

__all__ = [
    "ERROR_CODE_SYSTEM",
    "AuthError",
    "BodyTooLarge",
    "ConfigurationError",
    "ConnectionLimit",
    "EngineError",
    "HeaderFieldsTooLarge",
    "InvalidJson",
    "MethodNotAllowed",
    "Overloaded",
    "PrefetchUnavailable",
    "RequestError",
    "RequestTimeout",
    "RuleSetError",
    "ServiceError",
    "SpoolFull",
    "StoreUnavailable",
    "TooManyConnections",
    "TrustedClientsError",
    "UnknownCard",
    "UnknownService",
    "WrongHook",
    "operation_outcome",
]


class StoreUnavailable(ServiceError):
    """The database cannot be reached or refused the operation; the client may retry."""

    status_code = 503
    issue_code = "transient"
    error_code = "OG-503-STORE"


class ConnectionLimit(ServiceError):
    """The HTTP server (:mod:`service.http.server`) cut a connection off at a resource limit.

    Never raised: the server writes :func:`operation_outcome` of one of these, pre-rendered,
    before the request reaches the app, and closes the connection.
    """

    status_code = 503
    issue_code = "too-costly"
    error_code = "OG-LIMIT"


class HeaderFieldsTooLarge(ConnectionLimit):
    status_code = 431
    issue_code = "too-costly"
    error_code = "OG-431"


class RequestTimeout(ConnectionLimit):
    status_code = 408
    issue_code = "timeout"
    error_code = "OG-408"


class TooManyConnections(ConnectionLimit):
    status_code = 503
    issue_code = "transient"
    error_code = "OG-503-CONN"


class Overloaded(ServiceError):
    """The worker already has its bound of hook calls in flight; the client may retry soon.

    Answered by the edge layer (:mod:`service.http.edge`) before the request is read, with a
    ``Retry-After``; never raised inside a call.
    """

    status_code = 503
    issue_code = "throttled"
    error_code = "OG-503-BUSY"


class SpoolFull(StoreUnavailable):
    """The audit spool is full or its disk refuses writes while the database is away: a card
    cannot be recorded, so it is not given."""

    error_code = "OG-503-SPOOL"


class EngineError(ServiceError):
    """The rule engine failed during an evaluation (the evaluation is abandoned)."""

    status_code = 500
    issue_code = "exception"
    error_code = "OG-500-ENGINE"


class RuleSetError(ConfigurationError):
    """The rule files do not validate. ``problems`` holds ``file:line: message`` strings."""

    error_code = "OG-RULES"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems) if problems else "invalid rule set")
        self.problems = problems
