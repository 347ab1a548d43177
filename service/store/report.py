"""``osteoguard feedback report``: how clinicians respond to each rule's cards.

``issued`` counts the cards shown to clinicians. ``silent`` counts the cards a client in silent mode would
have been shown (SPEC §8: a site judges a rule before switching it on); ``suppressed`` counts
repeats that order-sign or medication-refill did not show again. Override reasons are shown
by their display text: the rule set's, for a code it offers (clients such as the CDS Hooks
sandbox send back only system and code), else the one the client sent, else the raw code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.store.database import Store


@dataclass
class RuleReport:
    rule_id: str
    issued: int = 0  # shown
    silent: int = 0  # would have been shown (silent mode)
    suppressed: int = 0  # repeats not shown again
    accepted: int = 0
    overridden: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def acceptance_rate(self) -> float | None:
        return None if not self.issued else self.accepted / self.issued

    def as_json(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "issued": self.issued,
            "silent": self.silent,
            "suppressed": self.suppressed,
            "accepted": self.accepted,
            "overridden": self.overridden,
            "acceptance_rate": None if self.acceptance_rate is None else round(self.acceptance_rate, 4),
            "override_reasons": dict(sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        }


def build_report(
    store: Store,
    since: datetime | None = None,
    displays: Mapping[tuple[str | None, str], str] | None = None,
) -> list[RuleReport]:
    """One row per rule that issued cards (since ``since``), sorted by rule id.

    ``displays``: (system, code) -> display text of the override reasons the rule set offers.
    """
    rows = store.report_rows(since)
    displays = displays or {}
    reports: dict[str, RuleReport] = {}
    for rule_id, disposition, count in rows["issued"]:
        report = reports.setdefault(rule_id, RuleReport(rule_id))
        if disposition == "silent":
            report.silent += int(count)
        elif disposition == "suppressed":
            report.suppressed += int(count)
        else:
            report.issued += int(count)
    for rule_id, outcome, count in rows["outcomes"]:
        report = reports.setdefault(rule_id, RuleReport(rule_id))
        if outcome == "accepted":
            report.accepted = int(count)
        elif outcome == "overridden":
            report.overridden = int(count)
    for rule_id, system, code, display, count in rows["reasons"]:
        known = displays.get((system, code)) if code else None
        label = known or display or code or "(no reason given)"
        report = reports.setdefault(rule_id, RuleReport(rule_id))
        report.reasons[label] = report.reasons.get(label, 0) + int(count)
    return [reports[k] for k in sorted(reports)]


def reason_displays(ruleset: Any) -> dict[tuple[str | None, str], str]:
    """(system, code) -> display of every override reason a rule set offers (a code of its own
    system also matches feedback that names no system)."""
    out: dict[tuple[str | None, str], str] = {}
    for r in ruleset.override_reasons:
        system = r.system or ruleset.override_system
        out[(system, r.code)] = r.display
        if r.system is None:
            out[(None, r.code)] = r.display
    return out


def render_table(reports: list[RuleReport]) -> str:
    """A plain-text table for terminals and tickets."""
    if not reports:
        return "No cards issued in this period."
    header = (
        "rule", "issued", "silent", "suppressed", "accepted", "overridden", "accept %", "override reasons"
    )  # fmt: skip
    lines = []
    for r in reports:
        rate = "-" if r.acceptance_rate is None else f"{r.acceptance_rate * 100:.0f}%"
        reasons = "; ".join(f"{label} ({n})" for label, n in r.as_json()["override_reasons"].items()) or "-"
        counts = (r.issued, r.silent, r.suppressed, r.accepted, r.overridden)
        lines.append((r.rule_id, *(str(n) for n in counts), rate, reasons))
    last = len(header) - 1
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(last)]
    out = []
    for row in [header, *lines]:
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, last)] + [row[last]]
        out.append("  ".join(cells))
    out.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 16)
    return "\n".join(out)
