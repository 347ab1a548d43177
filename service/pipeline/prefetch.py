"""Osteoguard's prefetch keys and their queries, built from the rule set's code lists.

The keys are public (SPEC §2): integrators configure them. Each query asks only for the codes
the rules read, so the templates in discovery and the FHIR-fallback queries are one string.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

from service.ruleset.model import RuleSet

PREFETCH_KEYS = ("patient", "medications", "estradiol", "boneDensity", "dexaProcedures", "vitaminD")


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
