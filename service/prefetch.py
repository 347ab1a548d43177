"""Prefetch templates and resolving the data each request needs (SPEC §2 "Data access").

The six keys are fixed; their queries are built from the rule set's code lists, so the
templates in discovery and the queries used for FHIR fallback are the same strings.
Template substitution is a pure function. A key whose value is missing, ``null`` or an
OperationOutcome is not data: it must be fetched, or the request fails with 412 naming it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from service.errors import PrefetchUnavailable, RequestError
from service.fhir import has_next_page
from service.ruleset import RuleSet

PREFETCH_KEYS = ("patient", "medications", "estradiol", "boneDensity", "dexaProcedures", "vitaminD")
_TOKEN = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")


def _code_param(codes: Iterable[tuple[str, str]]) -> str:
    # FHIR token search: system|code, comma-separated (OR). "|" and ":" are URL-encoded so
    # servers and proxies see one unambiguous query string; "," stays the OR separator.
    return ",".join(quote(f"{system}|{code}", safe="") for system, code in sorted(codes))


def prefetch_templates(ruleset: RuleSet) -> dict[str, str]:
    """The prefetch templates every service declares in discovery."""
    obs = ruleset.observations
    bone_codes = obs["dxa_tscore"] | obs["dxa_bmd"] | obs["frax_hip"] | obs["frax_major"]
    return {
        "patient": "Patient/{{context.patientId}}",
        "medications": "MedicationRequest?patient={{context.patientId}}&status=active",
        "estradiol": f"Observation?patient={{{{context.patientId}}}}&code={_code_param(obs['estradiol'])}",
        "boneDensity": f"Observation?patient={{{{context.patientId}}}}&code={_code_param(bone_codes)}",
        "dexaProcedures": (
            f"Procedure?patient={{{{context.patientId}}}}&code={_code_param(ruleset.procedures['dxa'])}"
        ),
        "vitaminD": f"Observation?patient={{{{context.patientId}}}}&code={_code_param(obs['vitamin_d'])}",
    }


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


def require(
    prefetch: Mapping[str, Any] | None, keys: Iterable[str], fhir_server: str | None
) -> dict[str, Any]:
    """Return the prefetched values for ``keys``, or raise 412 naming every unusable key."""
    prefetch = prefetch or {}
    missing = [key for key in keys if not is_data(prefetch.get(key))]
    if missing:
        reason = (
            "The request has no fhirServer to fetch them from."
            if not fhir_server
            else "Fetching from fhirServer is not available."
        )
        raise PrefetchUnavailable(missing, reason)
    return {key: prefetch[key] for key in keys}
