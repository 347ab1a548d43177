"""``osteoguard feedback report``: how clinicians respond to each rule's cards."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.store.database import Store


@dataclass
class RuleReport:
    rule_id: str
    issued: int = 0
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
            "accepted": self.accepted,
            "overridden": self.overridden,
            "acceptance_rate": None if self.acceptance_rate is None else round(self.acceptance_rate, 4),
            "override_reasons": dict(sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        }


def build_report(store: Store, since: datetime | None = None) -> list[RuleReport]:
    """One row per rule that issued cards (since ``since``), sorted by rule id."""
    rows = store.report_rows(since)
    reports: dict[str, RuleReport] = {}
    for rule_id, count in rows["issued"]:
        reports.setdefault(rule_id, RuleReport(rule_id)).issued = int(count)
    for rule_id, outcome, count in rows["outcomes"]:
        report = reports.setdefault(rule_id, RuleReport(rule_id))
        if outcome == "accepted":
            report.accepted = int(count)
        elif outcome == "overridden":
            report.overridden = int(count)
    for rule_id, code, display, count in rows["reasons"]:
        label = display or code or "(no reason given)"
        report = reports.setdefault(rule_id, RuleReport(rule_id))
        report.reasons[label] = report.reasons.get(label, 0) + int(count)
    return [reports[k] for k in sorted(reports)]


def render_table(reports: list[RuleReport]) -> str:
    """A plain-text table for terminals and tickets."""
    if not reports:
        return "No cards issued in this period."
    header = ("rule", "issued", "accepted", "overridden", "accept %", "override reasons")
    lines = []
    for r in reports:
        rate = "-" if r.acceptance_rate is None else f"{r.acceptance_rate * 100:.0f}%"
        reasons = "; ".join(f"{label} ({n})" for label, n in r.as_json()["override_reasons"].items()) or "-"
        lines.append((r.rule_id, str(r.issued), str(r.accepted), str(r.overridden), rate, reasons))
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(5)]
    out = []
    for row in [header, *lines]:
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, 5)] + [row[5]]
        out.append("  ".join(cells))
    out.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 16)
    return "\n".join(out)
