"""The few FHIR R4 reads the protocol layer needs: bundle entries, references, whose data it is.

Lenient like everything that reads client data: a field of the wrong type counts as absent,
never as an error, so an imperfect Bundle (no ``type``, foreign entries) still yields its
resources.
"""

from __future__ import annotations

from typing import Any


def reference_id(reference: Any, resource_type: str) -> str | None:
    """The id in a Reference to ``resource_type`` (relative, absolute or ``#contained``)."""
    if not isinstance(reference, dict):
        return None
    ref = reference.get("reference")
    if not isinstance(ref, str):
        return None
    parts = ref.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == resource_type:
        return parts[-1]
    if len(parts) >= 4 and parts[-4] == resource_type and parts[-2] == "_history":
        return parts[-3]
    return None


def text(value: Any) -> str | None:
    """``value`` if it is a string, else None (so a list or object never reaches a set lookup)."""
    return value if isinstance(value, str) else None


def belongs_to(resource: dict[str, Any], patient_id: str) -> bool:
    """False only when the resource's subject/patient clearly names another patient."""
    for key in ("subject", "patient"):
        if key in resource:
            value = resource[key]
            if type(value) is dict and value.get("reference") == "Patient/" + patient_id:
                return True  # the common form, without splitting the reference
            ref = reference_id(value, "Patient")
            return ref is None or ref == patient_id
    return True


def has_next_page(bundle: Any) -> bool:
    """True when a Bundle says it has more pages (a ``next`` link): it is not complete."""
    if not isinstance(bundle, dict) or not isinstance(bundle.get("link"), list):
        return False
    return any(isinstance(link, dict) and link.get("relation") == "next" for link in bundle["link"])


def depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, counting no further than ``limit`` + 1."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if level > deepest:
            deepest = level
            if deepest > limit:
                return deepest
        if isinstance(node, dict):
            stack.extend((v, level + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, level + 1) for v in node if isinstance(v, dict | list))
    return deepest


def bundle_resources(bundle: Any) -> list[dict[str, Any]]:
    """Resources of a Bundle (``type`` not required); a bare resource is a list of itself."""
    if not isinstance(bundle, dict):
        return []
    kind = bundle.get("resourceType")
    if kind != "Bundle":
        return [bundle] if isinstance(kind, str) else []
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return []
    out = []
    for entry in entries:
        if type(entry) is dict:
            resource = entry.get("resource")
            if type(resource) is dict and type(resource.get("resourceType")) is str:
                out.append(resource)
    return out
