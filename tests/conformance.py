"""Checks every CDS Hooks response must pass (spec requirements + SPEC §4)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fhir.resources.R4B import get_fhir_model_class

INDICATORS = {"info", "warning", "critical"}


def _absolute(url: Any, schemes: tuple[str, ...] = ("https",)) -> bool:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    return parts.scheme in schemes and bool(parts.netloc)


def _links(card: dict[str, Any], where: str, problems: list[str]) -> None:
    """SPEC §4: a link of type absolute to the main source, and source.url to the rule's page."""
    links = card.get("links", [])
    if not links:
        problems.append(f"{where}.links: a card links to its main source")
    for j, link in enumerate(links):
        if link.get("type") != "absolute" or not link.get("label") or not _absolute(link.get("url")):
            problems.append(f"{where}.links[{j}] must be type absolute, with a label and an https URL")
    source = card.get("source", {})
    url, rule_id = source.get("url"), source.get("topic", {}).get("code")
    if not _absolute(url, ("https", "http")) or not str(url).endswith(f"/docs/rules/{rule_id}"):
        problems.append(f"{where}.source.url must be the absolute URL of the rule's documentation page")


def _no_empty(value: Any, path: str, problems: list[str]) -> None:
    if value is None or value == "" or value == [] or value == {}:
        problems.append(f"{path} is null or empty")
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_empty(v, f"{path}.{k}", problems)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_empty(v, f"{path}[{i}]", problems)


def check_response(body: dict[str, Any], *, patient_id: str, draft_ids: set[str]) -> list[str]:
    """Every spec violation in a hook response, as readable strings (empty list: conformant)."""
    problems: list[str] = []
    if set(body) != {"cards"} or not isinstance(body["cards"], list):
        return [f"response must be exactly {{'cards': [...]}}, got keys {sorted(body)}"]
    for i, card in enumerate(body["cards"]):
        where = f"cards[{i}]"
        _no_empty(card, where, problems)
        summary = card.get("summary", "")
        if not isinstance(summary, str) or not 0 < len(summary) < 140:
            problems.append(f"{where}.summary must be 1-139 characters")
        if card.get("indicator") not in INDICATORS:
            problems.append(f"{where}.indicator invalid")
        if not isinstance(card.get("uuid"), str):
            problems.append(f"{where}.uuid missing")
        source = card.get("source", {})
        if not source.get("label") or not source.get("topic", {}).get("code"):
            problems.append(f"{where}.source needs label and topic.code")
        if not source.get("topic", {}).get("system"):
            problems.append(f"{where}.source.topic.system missing")
        _links(card, where, problems)
        if not isinstance(card.get("detail"), str) or "rule set" not in card["detail"]:
            problems.append(f"{where}.detail must carry the rule-set version")
        suggestions = card.get("suggestions", [])
        if suggestions and card.get("selectionBehavior") not in ("at-most-one", "any"):
            problems.append(f"{where}.selectionBehavior required with suggestions")
        if card.get("indicator") in ("warning", "critical"):
            reasons = card.get("overrideReasons", [])
            if not reasons or not all(r.get("display") and r.get("code") for r in reasons):
                problems.append(f"{where}.overrideReasons with display required on warning cards")
            if not any("snooze" in r.get("code", "") for r in reasons):
                problems.append(f"{where}.overrideReasons must offer a snooze")
        for j, suggestion in enumerate(suggestions):
            swhere = f"{where}.suggestions[{j}]"
            if not isinstance(suggestion.get("uuid"), str) or not suggestion.get("label"):
                problems.append(f"{swhere} needs uuid and label")
            for k, action in enumerate(suggestion.get("actions", [])):
                awhere = f"{swhere}.actions[{k}]"
                if action.get("type") not in ("create", "update", "delete") or not action.get("description"):
                    problems.append(f"{awhere} needs a type and a description")
                if action["type"] == "delete":
                    rid = str(action.get("resourceId", ""))
                    if rid.split("/")[-1] not in draft_ids:
                        problems.append(f"{awhere} deletes {rid}, not a draft order")
                    continue
                resource = action.get("resource")
                if not isinstance(resource, dict):
                    problems.append(f"{awhere} needs a resource")
                    continue
                try:
                    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
                except Exception as exc:  # any validation failure is a finding
                    problems.append(f"{awhere}.resource is not valid FHIR R4: {exc}")
                ref = resource.get("subject", {}).get("reference")
                if ref != f"Patient/{patient_id}":
                    problems.append(f"{awhere}.resource.subject is {ref!r}")
                if action["type"] == "update" and resource.get("id") not in draft_ids:
                    problems.append(f"{awhere} updates {resource.get('id')!r}, not a draft order id")
    return problems
