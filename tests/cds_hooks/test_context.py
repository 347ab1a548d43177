"""The context fields the rules read: ``patientId`` by the FHIR R4 id syntax."""

from __future__ import annotations

import pytest

from cds_hooks.context import parse_context
from cds_hooks.errors import RequestError


@pytest.mark.parametrize("patient_id", [".", "..", "x\n", "p1\n", "\n", "p\r", "a" * 65, "", "p%2f1"])
def test_patient_id_outside_the_r4_id_syntax_is_refused(patient_id: str) -> None:
    # "." and ".." would be path segments once placed in a FHIR URL (Patient/..).
    with pytest.raises(RequestError, match="context.patientId"):
        parse_context("patient-view", {"patientId": patient_id})


@pytest.mark.parametrize("patient_id", ["p1", "A-1.2", "a" * 64, "...", "1.2.840"])
def test_patient_id_in_the_r4_id_syntax_is_accepted(patient_id: str) -> None:
    assert parse_context("patient-view", {"patientId": patient_id}).patient_id == patient_id
