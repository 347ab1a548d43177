"""Prefetch: substituting templates, and resolving the data a request needs (spec "Prefetch").

The service declares its templates in discovery; the same strings are the queries used for
FHIR-server fallback. Template substitution is a pure function. A key whose value is missing, ``null``, an
OperationOutcome or a Bundle with a ``next`` page is not complete data: it is fetched from
``fhirServer`` (:mod:`cds_hooks.fhir_client`), or the request fails with 412 naming it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from cds_hooks.errors import PrefetchUnavailable, RequestError
from cds_hooks.fhir import has_next_page
from cds_hooks.fhir_client import FetchFailed, FhirFetcher, server_from_request
from cds_hooks.models import CdsRequest

_TOKEN = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")


def substitute(template: str, context: Mapping[str, Any]) -> str:
    """Replace ``{{context.x}}`` tokens with URL-encoded root-level primitive context values."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(1)
        if not token.startswith("context."):
            raise RequestError(f"prefetch token {{{{{token}}}}} is not supported")
        value = context.get(token.removeprefix("context."))
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise RequestError(f"prefetch token {{{{{token}}}}} has no primitive value in context")
        return quote(str(value), safe="")

    return _TOKEN.sub(replace, template)


def is_data(value: Any) -> bool:
    """True when a prefetch value is complete data.

    Missing, ``null``, an OperationOutcome, or a Bundle with a ``next`` page is not: a partial
    prefetch must never be treated as complete.
    """
    return (
        isinstance(value, dict)
        and isinstance(value.get("resourceType"), str)
        and value["resourceType"] != "OperationOutcome"
        and not has_next_page(value)
    )


async def resolve(
    request: CdsRequest,
    keys: Iterable[str],
    templates: Mapping[str, str],
    fetcher: FhirFetcher | None,
    deadline: float,
) -> dict[str, Any]:
    """The data for ``keys``: prefetched where complete, else fetched from ``fhirServer``.

    Raises 412 (PrefetchUnavailable) naming every key that can be had neither way, with the
    reason. A key the request already has is never queried.
    """
    prefetch = request.prefetch or {}
    have = {key: prefetch[key] for key in keys if is_data(prefetch.get(key))}
    missing = [key for key in keys if key not in have]
    if not missing:
        return have
    if fetcher is None:
        raise PrefetchUnavailable(missing, "This evaluation cannot reach a FHIR server.")
    try:
        server = server_from_request(request.fhirServer, request.fhirAuthorization, fetcher.listed)
    except FetchFailed as exc:
        raise PrefetchUnavailable(missing, exc.reason[0].upper() + exc.reason[1:] + ".") from exc
    queries = {key: substitute(templates[key], request.context) for key in missing}
    results, failures = await fetcher.fetch(server, queries, deadline)
    if failures:
        reasons = "; ".join(f"{f.key}: {f.reason}" for f in sorted(failures, key=lambda f: f.key))
        raise PrefetchUnavailable([f.key for f in failures], f"Fetching from fhirServer failed ({reasons}).")
    return have | results
