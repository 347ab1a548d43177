"""The CDS Hooks 2.0 vocabulary, written once: hook names, card indicators, selection
behaviours and the summary length limit."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

ORDER_SELECT = "order-select"
ORDER_SIGN = "order-sign"
PATIENT_VIEW = "patient-view"
# CDS Hooks library hook (version 0.1.0): context.medications is a Bundle of the refilled orders.
MEDICATION_REFILL = "medication-refill"

# Hooks whose context carries the clinician's draft orders (context.draftOrders).
ORDER_HOOKS = (ORDER_SELECT, ORDER_SIGN)
# Hooks whose context carries the orders the call is about: the drafts, or (medication-refill)
# the MedicationRequests being refilled (context.medications).
ACTING_HOOKS = (*ORDER_HOOKS, MEDICATION_REFILL)

# Spec: "summary ... SHALL be less than 140 characters".
SUMMARY_MAX_CHARS = 139


class Indicator(StrEnum):
    """Card urgency (spec §Card attributes): info < warning < critical."""

    info = "info"
    warning = "warning"
    critical = "critical"


SelectionBehavior = Literal["at-most-one", "any"]
SELECTION_BEHAVIORS: tuple[SelectionBehavior, ...] = ("at-most-one", "any")

ActionType = Literal["create", "update", "delete"]
ACTION_TYPES: tuple[ActionType, ...] = ("create", "update", "delete")
