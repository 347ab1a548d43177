"""The CDS services Osteoguard offers (SPEC §2): id, hook, title and description of each."""

from __future__ import annotations

from dataclasses import dataclass

from cds_hooks.vocabulary import MEDICATION_REFILL, ORDER_SELECT, ORDER_SIGN, PATIENT_VIEW


@dataclass(frozen=True)
class ServiceDefinition:
    id: str
    hook: str
    title: str
    description: str


SERVICES = (
    ServiceDefinition(
        "anastrozole-bone-order-select",
        ORDER_SELECT,
        "Bone health check when anastrozole is selected",
        "When anastrozole is selected for a patient, checks DXA, estradiol and 25-OH vitamin D "
        "monitoring and suggests dose titration or antiresorptive therapy where bone is at risk.",
    ),
    ServiceDefinition(
        "anastrozole-bone-order-sign",
        ORDER_SIGN,
        "Bone health check before anastrozole is signed",
        "Before an anastrozole order is signed, checks DXA, estradiol and 25-OH vitamin D "
        "monitoring and suggests dose titration or antiresorptive therapy where bone is at risk.",
    ),
    ServiceDefinition(
        "anastrozole-bone-patient-view",
        PATIENT_VIEW,
        "Bone health review for patients taking anastrozole",
        "When the chart of a patient with an active anastrozole prescription is opened, reviews "
        "DXA, estradiol and 25-OH vitamin D monitoring and bone-protective treatment.",
    ),
    ServiceDefinition(
        "anastrozole-bone-medication-refill",
        MEDICATION_REFILL,
        "Bone health check when anastrozole is refilled",
        "When an anastrozole prescription is refilled, checks DXA, estradiol and 25-OH vitamin D "
        "monitoring and suggests dose titration (on the refilled order) or antiresorptive therapy "
        "where bone is at risk.",
    ),
)


USAGE_REQUIREMENTS = (
    "Send the prefetch keys, or fhirServer with fhirAuthorization so missing data "
    "can be read (Patient, MedicationRequest, Observation, Procedure: read access)."
)


def service_for_hook(hook: str) -> ServiceDefinition | None:
    """The service that answers ``hook``, if any."""
    return next((s for s in SERVICES if s.hook == hook), None)
