"""Repairing a client's draft order before an ``update`` is built from it (SPEC §4, §7).

Real clients send imperfect FHIR. The public CDS Hooks sandbox sends a draft
MedicationRequest whose ``category`` (and, with a "Treating" condition, ``reasonCode``) is a
single object where R4 wants a list; an ``update`` copied from it failed validation and was
dropped. :func:`repair` returns a copy in which every field that R4 declares as a list but
that holds a single object (or a single value) is a one-item list, at every depth: the list
fields are read from the fhir.resources R4B models, not from a hand-kept list, so
``identifier``, ``dosageInstruction``, ``doseAndRate``, ``note``, … are covered as well.

Nothing else is changed: values are never invented, and a field the models do not know is
left as it is (validation then says so). :func:`first_problem` names what still fails.
"""

from __future__ import annotations

import copy
import functools
import types
import typing
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from fhir_core.types import FhirBase
from pydantic import BaseModel, ValidationError

# How deep the repair walks (FHIR nests a dozen levels; the request depth is bounded too).
MAX_DEPTH = 32


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``X``, ``X | None``, ``list[X]``), if any.

    fhir.resources annotates element fields with lazy type markers (``DosageType``) that name
    their model class; those are resolved to it.
    """
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, type) and issubclass(annotation, FhirBase):
        model: type[BaseModel] = annotation.get_model_klass()
        return model
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _is_list(annotation: Any) -> bool:
    """Whether an annotation is a list type (``list[X]``, ``typing.List[X]``, ``list[X] | None``)."""
    origin = typing.get_origin(annotation)
    if origin in (list, typing.List):  # noqa: UP006 - the models use typing.List
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(arg) for arg in typing.get_args(annotation))
    return False


@functools.cache
def list_fields(model: type[BaseModel]) -> dict[str, type[BaseModel] | None]:
    """Every JSON name of ``model`` and its element model (None for primitives), list fields only."""
    return {
        (info.alias or name): _model_of(info.annotation)
        for name, info in model.model_fields.items()
        if _is_list(info.annotation)
    }


@functools.cache
def element_fields(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every JSON name of ``model`` whose value is itself a FHIR element (walked into)."""
    out = {}
    for name, info in model.model_fields.items():
        inner = _model_of(info.annotation)
        if inner is not None:
            out[info.alias or name] = inner
    return out


def _resource_model(value: dict[str, Any]) -> type[BaseModel] | None:
    kind = value.get("resourceType")
    if not isinstance(kind, str):
        return None
    try:
        model: type[BaseModel] = get_fhir_model_class(kind)
    except (KeyError, ValueError):
        return None
    return model


def _walk(value: Any, model: type[BaseModel] | None, depth: int, repaired: list[str], path: str) -> Any:
    if depth > MAX_DEPTH or not isinstance(value, dict):
        return value
    # A nested resource (contained, Bundle.entry.resource) is read with its own model.
    model = _resource_model(value) or model
    if model is None:
        return value
    lists = list_fields(model)
    elements = element_fields(model)
    for key in list(value):
        item = value[key]
        if key in lists and item is not None and not isinstance(item, list):
            value[key] = item = [item]
            repaired.append(f"{path}{key}")
        inner = elements.get(key)
        if isinstance(item, list):
            value[key] = [
                _walk(v, inner, depth + 1, repaired, f"{path}{key}[{i}].") for i, v in enumerate(item)
            ]
        elif isinstance(item, dict):
            value[key] = _walk(item, inner, depth + 1, repaired, f"{path}{key}.")
    return value


def _needs_repair(value: Any, model: type[BaseModel] | None, depth: int) -> bool:
    """Whether :func:`_walk` would wrap anything (read-only: most drafts need nothing)."""
    if depth > MAX_DEPTH or not isinstance(value, dict):
        return False
    model = _resource_model(value) or model
    if model is None:
        return False
    lists = list_fields(model)
    elements = element_fields(model)
    for key, item in value.items():
        if key in lists and item is not None and not isinstance(item, list):
            return True
        inner = elements.get(key)
        if inner is None and key != "contained":
            continue
        if isinstance(item, list):
            if any(_needs_repair(v, inner, depth + 1) for v in item):
                return True
        elif isinstance(item, dict) and _needs_repair(item, inner, depth + 1):
            return True
    return False


def repair(resource: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``resource`` repaired, and the paths that were wrapped into lists.

    A copy when anything was repaired; ``resource`` itself when nothing needed it (callers
    copy before they change a draft: service.cards.drafts).
    """
    if not _needs_repair(resource, None, 0):
        return resource, []
    repaired: list[str] = []
    fixed = _walk(_copy(resource), None, 0, repaired, "")
    return fixed, repaired


def _copy(resource: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a JSON object; orjson's round trip is several times faster than deepcopy."""
    try:
        copied: dict[str, Any] = orjson.loads(orjson.dumps(resource))
    except (TypeError, orjson.JSONEncodeError):  # e.g. an integer beyond 64 bits
        return copy.deepcopy(resource)
    return copied


def first_problem(resource: dict[str, Any]) -> str | None:
    """Why ``resource`` is not valid FHIR R4 (the first error, by field path), or None."""
    model = _resource_model(resource)
    if model is None:
        return "it names no known FHIR resource type"
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        errors = exc.errors()
        if not errors:
            return "it is not valid FHIR R4"
        where = ".".join(str(p) for p in errors[0]["loc"] if not str(p).startswith("function-")) or "resource"
        return f"`{where}` is not valid FHIR R4"
    except (KeyError, ValueError, TypeError):
        return "it is not valid FHIR R4"
    return None
