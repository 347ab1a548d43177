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


def _medication_param(codes: Iterable[tuple[str, str]]) -> str:
    # Drug classes hold hundreds of codes: a token without a system matches the code in any
    # system, which keeps the URL short; the fact builder still checks the RxNorm system.
    return ",".join(sorted(code for _, code in codes))


def prefetch_templates(ruleset: RuleSet) -> dict[str, str]:
    """The prefetch templates every service declares in discovery."""
    obs = ruleset.observations
    bone_codes = obs["dxa_tscore"] | obs["dxa_bmd"] | obs["dxa_zscore"] | obs["frax_hip"] | obs["frax_major"]
    safety_codes = frozenset().union(*(obs[name] for name in SAFETY_LAB_LISTS))
    # Bone agents are found whatever their status: long-acting ones given months ago still act.
    agents = _medication_param(ruleset.medications["antiresorptive"][0])
    return {
        "patient": "Patient/{{context.patientId}}",
        "medications": "MedicationRequest?patient={{context.patientId}}&status=active",
        "estradiol": f"Observation?patient={{{{context.patientId}}}}&code={_code_param(obs['estradiol'])}",
        "boneDensity": f"Observation?patient={{{{context.patientId}}}}&code={_code_param(bone_codes)}",
        "dexaProcedures": (
            f"Procedure?patient={{{{context.patientId}}}}&code={_code_param(ruleset.procedures['dxa'])}"
        ),
        "vitaminD": f"Observation?patient={{{{context.patientId}}}}&code={_code_param(obs['vitamin_d'])}",
        "boneAgents": f"MedicationRequest?patient={{{{context.patientId}}}}&code={agents}",
        "boneAgentStatements": f"MedicationStatement?patient={{{{context.patientId}}}}&code={agents}",
        "safetyLabs": f"Observation?patient={{{{context.patientId}}}}&code={_code_param(safety_codes)}",
        "testosterone": (
            f"Observation?patient={{{{context.patientId}}}}&code={_code_param(obs['testosterone'])}"
        ),
    }
