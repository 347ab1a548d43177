"""Logging as one JSON object per line. Callers pass only non-identifying fields in ``extra``.

SPEC §9: no line, ours or a library's, carries a patient id, a name, a token or a FHIR query
string. Our own lines name keys, statuses, counts and ids of rules, never URLs or bodies.
The libraries' lines cannot be made safe one by one (httpx logs every request URL, with its
``patient=`` query, at info; uvicorn's lines name the raw path), so their loggers are held at
``warning`` whatever ``OSTEOGUARD_LOG_LEVEL`` says: their warnings and errors still show.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from service.http.requestid import REQUEST_ID

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type only: messages and frames can carry request content.
            entry["exception"] = record.exc_info[0].__name__
        return orjson.dumps(entry, default=str).decode()


# Libraries whose info and debug lines can carry request URLs, query strings or SQL parameters.
QUIET_LIBRARIES = ("httpx", "httpcore", "hpack", "uvicorn", "alembic", "sqlalchemy", "asyncio")
LEVELS = ("debug", "info", "warning", "error", "critical")


def parse_level(value: str) -> str:
    """A log level, case-insensitively (``INFO`` is ``info``); ValueError names the choices."""
    level = value.strip().lower()
    if level not in LEVELS:
        raise ValueError(f"{value!r} is not a log level (one of {', '.join(LEVELS)})")
    return level


def quiet_libraries() -> None:
    """Hold the libraries' loggers at warning (SPEC §9)."""
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_logging(level: str = "info") -> None:
    """Route every logger (ours and uvicorn's) to stderr as JSON lines."""
    # What the JSON lines never show is not collected either (the logging HOWTO's
    # "Optimization" section): finding the caller walks the stack for every record. An
    # access line: 12 -> 10 us.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(parse_level(level).upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
        logging.getLogger(name).setLevel(logging.NOTSET)
    quiet_libraries()
