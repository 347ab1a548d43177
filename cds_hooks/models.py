"""CDS Hooks 2.0 wire objects, one model per spec object, named and spelled as the spec does.

Responses are serialised with :func:`to_json_dict`, which drops ``None`` and empty
collections (spec: "JSON elements SHALL NOT be null or empty"), except the top-level
``cards`` array, which is always present.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cds_hooks.vocabulary import SUMMARY_MAX_CHARS, ActionType, Indicator, SelectionBehavior


class _Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class Coding(_Wire):
    # Frozen (as Link): the card builder gives every card of a rule set the same instances.
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)

    code: str
    system: str | None = None
    display: str | None = None


class Source(_Wire):
    label: str
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Action(_Wire):
    type: ActionType
    description: str
    resource: dict[str, Any] | None = None
    resourceId: str | None = None


class Suggestion(_Wire):
    label: str
    uuid: str | None = None
    isRecommended: bool | None = None
    actions: list[Action] = Field(default_factory=list)


class Link(_Wire):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)

    label: str
    url: str
    type: Literal["absolute", "smart"]
    appContext: str | None = None


class Card(_Wire):
    uuid: str | None = None
    summary: str = Field(max_length=SUMMARY_MAX_CHARS)
    detail: str | None = None
    indicator: Indicator
    source: Source
    suggestions: list[Suggestion] = Field(default_factory=list)
    selectionBehavior: SelectionBehavior | None = None
    overrideReasons: list[Coding] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list)


class CdsResponse(_Wire):
    cards: list[Card] = Field(default_factory=list)


class Service(_Wire):
    """One entry of the discovery document."""

    hook: str
    title: str | None = None
    description: str
    id: str
    prefetch: dict[str, str] = Field(default_factory=dict)
    usageRequirements: str | None = None


class Discovery(_Wire):
    services: list[Service]


class CdsRequest(BaseModel):
    """A hook call. Only the fields the service reads are typed; anything else is tolerated."""

    model_config = ConfigDict(extra="allow")

    hook: str = Field(min_length=1)
    # A UUID in CDS Hooks; we take any text without control characters (a NUL byte cannot
    # be stored by PostgreSQL, and no id needs a line break).
    hookInstance: str = Field(min_length=1, pattern=r"^[^\x00-\x1f\x7f]+$")
    # Read only when data must be fetched from the FHIR server; checked there, so a malformed
    # value never fails a call that has all its prefetch.
    fhirServer: Any = None
    fhirAuthorization: Any = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None


def _prune(value: Any) -> Any:
    # One pass, no intermediate copies: this runs over every response (client drafts included).
    # It only sees model_dump(mode="json") output, so exact type checks suffice: JSON objects
    # and arrays are plain dicts and lists there.
    if type(value) is dict:
        return _prune_dict(value)
    if type(value) is list:
        return _prune_list(value)
    return value


def _prune_dict(value: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, item in value.items():
        kind = type(item)
        if kind is dict:
            item = _prune_dict(item)
            if not item:
                continue
        elif kind is list:
            item = _prune_list(item)
            if not item:
                continue
        elif item is None or (kind is str and not item):
            continue
        out[key] = item
    return out


def _prune_list(value: list[Any]) -> list[Any]:
    kept = []
    for item in value:
        kind = type(item)
        if kind is dict:
            item = _prune_dict(item)
            if not item:
                continue
        elif kind is list:
            item = _prune_list(item)
            if not item:
                continue
        elif item is None or (kind is str and not item):
            continue
        kept.append(item)
    return kept


def to_json_dict(model: BaseModel) -> dict[str, Any]:
    """Serialise a wire model the way the spec wants: no nulls, no empty strings or arrays.

    ``CdsResponse`` keeps its ``cards`` key even when empty (``{"cards": []}`` means
    "no guidance").
    """
    data: dict[str, Any] = _prune(model.model_dump(mode="json", exclude_none=True))
    if isinstance(model, CdsResponse):
        data.setdefault("cards", [])
    return data
