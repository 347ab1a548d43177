"""The rule documentation over HTTP: ``GET /docs/rules`` and ``GET /docs/rules/{rule_id}``.

Public, with no JWT check: a clinician opens these pages in a browser from a card's
``source.url``, and they are made from the rule files alone, so they carry no patient data.
Thin: the pages are rendered by :mod:`service.ruleset.docs` from the rule set being served
(a reloaded set shows at once). An unknown rule id is a 404 OperationOutcome.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from service.errors import UnknownService
from service.ruleset.docs import DOCS_PATH, docs_base, index_page, rule_page
from service.ruleset.model import RuleSet

docs_router = APIRouter()


def request_docs_base(request: Request) -> str:
    """Where the pages are for this request's cards: OSTEOGUARD_PUBLIC_URL, else the request's base URL."""
    public_url: str | None = request.app.state.settings.public_url
    if public_url:  # always in jwt mode; the request's base URL (about 6 µs) is not needed
        return docs_base(public_url)
    return docs_base(None, str(request.base_url))


def _ruleset(request: Request) -> RuleSet:
    ruleset: RuleSet = request.app.state.registry.ruleset
    return ruleset


@docs_router.get(DOCS_PATH)
async def rules_index(request: Request) -> HTMLResponse:
    return HTMLResponse(index_page(_ruleset(request)))


@docs_router.get(DOCS_PATH + "/{rule_id}")
async def rule_doc(rule_id: str, request: Request) -> HTMLResponse:
    ruleset = _ruleset(request)
    try:
        rule = ruleset.rule(rule_id)
    except KeyError:
        raise UnknownService(f"no rule with id {rule_id!r}") from None
    return HTMLResponse(rule_page(ruleset, rule))
