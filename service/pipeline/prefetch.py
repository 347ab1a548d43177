"""Osteoguard's prefetch keys and their queries, built from the rule set's code lists.

The keys are public (SPEC §2): integrators configure them. Each query asks only for the codes
the rules read, so the templates in discovery and the FHIR-fallback queries are one string.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

from service.ruleset.model import RuleSet

PREFETCH_KEYS = (
    "patient",
    "medications",
    "estradiol",
    "boneDensity",
    "dexaProcedures",
    "vitaminD",
    "boneAgents",
    "boneAgentStatements",
    "safetyLabs",
    "testosterone",
)
SAFETY_LAB_LISTS = ("egfr", "creatinine_clearance", "calcium", "calcium_ionized", "albumin")


def _code_param(codes: Iterable[tuple[str, str]]) -> str:
    # FHIR token search: system|code, comma-separated (OR). "|" and ":" are URL-encoded so
    # servers and proxies see one unambiguous query string; "," stays the OR separator.
    return ",".join(quote(f"{system}|{code}", safe="") for system, code in sorted(codes))


def _medication_param(codes: Iterable[str]) -> str:
    # A class has hundreds of RxNorm codes: written without the system (a token without one
    # matches that code in any system) the query stays short; the fact builder still reads
    # only RxNorm codings.
    return ",".join(sorted(codes, key=lambda c: (len(c), c)))


def prefetch_templates(ruleset: RuleSet) -> dict[str, str]:
    """The prefetch templates every service declares in discovery."""
    obs = ruleset.observations
    bone_codes = obs["dxa_tscore"] | obs["dxa_bmd"] | obs["dxa_zscore"] | obs["frax_hip"] | obs["frax_major"]
    safety_codes = frozenset().union(*(obs[name] for name in SAFETY_LAB_LISTS))
    bone_agents = _medication_param(ruleset.medications["bone-agent"].codes)
    return {
        "patient": "Patient/{{context.patientId}}",
        "medications": "MedicationRequest?patient={{context.patientId}}&status=active",
        "estradiol": f"Observation?patient={{{{context.patientId}}}}&code={_code_param(obs['estradiol'])}",
        "boneDensity": f"Observation?patient={{{{context.patientId}}}}&code={_code_param(bone_codes)}",
        "dexaProcedures": (
            f"Procedure?patient={{{{context.patientId}}}}&code={_code_param(ruleset.procedures['dxa'])}"
        ),
        "vitaminD": f"Observation?patient={{{{context.patientId}}}}&code={_code_param(obs['vitamin_d'])}",
        # Every status: a long-acting agent given months ago is still current therapy (SPEC §3).
        "boneAgents": f"MedicationRequest?patient={{{{context.patientId}}}}&code={bone_agents}",
        "boneAgentStatements": f"MedicationStatement?patient={{{{context.patientId}}}}&code={bone_agents}",
        "safetyLabs": f"Observation?patient={{{{context.patientId}}}}&code={_code_param(safety_codes)}",
        "testosterone": (
            f"Observation?patient={{{{context.patientId}}}}&code={_code_param(obs['testosterone'])}"
        ),
    }
