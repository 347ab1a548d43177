"""The pipeline every hook call goes through, as named steps.

::

    look_up ─▶ validate ─▶ about_anastrozole ─▶ gather ─▶ derive_facts ─▶ evaluate ─▶ build_cards ─▶ record
     404        400       no: {"cards": []}      412     FHIR → facts   durable_rules     cards and  snoozes,
                                            deceased: {"cards": []}                       what each  audit
                                                                                          rests on

Each step is one method of :class:`Registry`; :meth:`Registry.call` runs them in that order on
one :class:`Call`, which carries what the steps have found so far. A call reads the rule set,
its engine and its prefetch templates once, at its start (:class:`Served`), so a reload that
lands meanwhile never mixes two rule sets in one answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from pydantic import ValidationError

from cds_hooks.context import HookContext, candidate_orders, parse_context
from cds_hooks.fhir import belongs_to, bundle_resources, depth
from cds_hooks.fhir_client import FhirFetcher
from cds_hooks.models import Card, CdsRequest, CdsResponse, Discovery, Service
from cds_hooks.prefetch import resolve
from cds_hooks.trust import DEFAULT_SETTINGS, ClientSettings
from cds_hooks.vocabulary import ACTING_HOOKS
from service.cards.builder import CardBuilder
from service.cards.repair import repair
from service.clinical.facts import FactBuilder, PatientData, is_deceased
from service.engine.adapter import RuleEngine
from service.errors import InvalidJson, RequestError, UnknownService, WrongHook
from service.pipeline.prefetch import PREFETCH_KEYS, prefetch_templates
from service.pipeline.record import Caller, Issued, Recorder, issued
from service.pipeline.services import SERVICES, USAGE_REQUIREMENTS, ServiceDefinition
from service.ruleset.docs import OFFLINE_BASE
from service.ruleset.model import RuleSet
from service.ruleset.schema import Fact, Firing
from service.store.audit import AuditWriter
from service.store.database import Store
from service.store.snoozes import SnoozeCache

# The drafts in the context are copied and re-validated for suggestions (recursive steps);
# FHIR nests a dozen levels. Prefetch is only read at fixed shallow paths.
MAX_DEPTH = 64
# patient-view needs the active medications to know whether the call is about anastrozole.
ABOUT_KEYS = ("medications",)


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def utc_today() -> date:
    return datetime.now(UTC).date()


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Served:
    """What one call is answered with: a rule set, its compiled engine, its prefetch templates."""

    ruleset: RuleSet
    engine: RuleEngine
    templates: dict[str, str]


@dataclass
class Call:
    """One hook call as it moves through the steps."""

    service: ServiceDefinition
    request: CdsRequest
    context: HookContext
    served: Served
    facts: FactBuilder
    deadline: float
    docs_base: str  # where the rule documentation pages are, for each card's source.url
    drafts: list[dict[str, Any]] = field(default_factory=list)  # the anastrozole drafts, repaired
    data: dict[str, Any] = field(default_factory=dict)  # prefetch key -> FHIR data
    caller: Caller = field(default_factory=Caller)  # who called, and their settings (SPEC §8)


class Registry:
    """Owns the services and the rule set being served; answers hook calls.

    ``docs_base`` is where the rule documentation pages are (each card's ``source.url`` is one
    of them): the public URL, else the local default. The HTTP route names it per call, from
    the public URL or the request's own base URL.
    """

    def __init__(
        self,
        ruleset: RuleSet,
        engine: RuleEngine,
        today: Callable[[], date] = utc_today,
        *,
        fetcher: FhirFetcher | None = None,
        recorder: Recorder | None = None,
        docs_base: str = OFFLINE_BASE,
        on_not_offered: Callable[[str, str], None] | None = None,
    ) -> None:
        self.today = today
        self.on_not_offered = on_not_offered  # counts suggestions a card could not offer
        self.fetcher = fetcher
        self.recorder = recorder
        self.docs_base = docs_base
        self.services = {s.id: s for s in SERVICES}
        self.served = Served(ruleset, engine, prefetch_templates(ruleset))

    # The parts other layers read (the feedback route, readiness, reload, tests).
    @property
    def ruleset(self) -> RuleSet:
        return self.served.ruleset

    @property
    def engine(self) -> RuleEngine:
        return self.served.engine

    @property
    def store(self) -> Store | None:
        return self.recorder.store if self.recorder else None

    @property
    def audit(self) -> AuditWriter | None:
        return self.recorder.audit if self.recorder else None

    @property
    def snoozes(self) -> SnoozeCache | None:
        return self.recorder.snoozes if self.recorder else None

    def now(self) -> datetime:
        return self.recorder.now() if self.recorder else utc_now()

    def install(self, ruleset: RuleSet, engine: RuleEngine) -> RuleEngine:
        """Serve a new rule set from now on; returns the engine it replaces (to close later).

        One assignment, so every call sees one consistent set.
        """
        old = self.served.engine
        self.served = Served(ruleset, engine, prefetch_templates(ruleset))
        return old

    def discovery(self) -> Discovery:
        templates = self.served.templates
        return Discovery(
            services=[
                Service(
                    hook=s.hook,
                    title=s.title,
                    description=s.description,
                    id=s.id,
                    prefetch=dict(templates),
                    usageRequirements=USAGE_REQUIREMENTS,
                )
                for s in SERVICES
            ]
        )

    def service_for_hook(self, hook: str) -> ServiceDefinition:
        for service in SERVICES:
            if service.hook == hook:
                return service
        raise RequestError(f"no Osteoguard service answers the hook {hook!r}")

    async def call(
        self,
        service_id: str,
        payload: Any,
        *,
        docs_base: str | None = None,
        observe: Callable[[Call, list[Fact], list[Firing]], None] | None = None,
        client_iss: str | None = None,
        settings: ClientSettings = DEFAULT_SETTINGS,
    ) -> CdsResponse:
        """Answer one hook call (``payload`` is the parsed JSON body).

        ``docs_base``: where this call's cards link for the rule documentation (default: the
        registry's). ``observe``: told the facts and the engine's firings of this call, once
        evaluated (``osteoguard explain``); it does not change the answer.
        registry's). ``client_iss`` and ``settings``: the verified caller (None with auth off)
        and the settings it is served with (SPEC §8).
        """
        call = self.validate(self.look_up(service_id), payload, docs_base)
        call.caller = Caller(client_iss, settings)
        if not await self.about_anastrozole(call):
            return CdsResponse(cards=[])
        patient = await self.gather(call)
        if is_deceased(patient.patient):
            return CdsResponse(cards=[])  # SPEC §3: a deceased patient gets no cards
        facts = self.derive_facts(call, patient)
        firings = self.evaluate(call, facts)
        if observe is not None:
            observe(call, facts, firings)
        cards = self.build_cards(call, facts, firings)
        return CdsResponse(cards=await self.record(call, cards))

    # ---- the steps -------------------------------------------------------------------------
    def look_up(self, service_id: str) -> ServiceDefinition:
        service = self.services.get(service_id)
        if service is None:
            raise UnknownService(f"no CDS service with id {service_id!r}")
        return service

    def validate(self, service: ServiceDefinition, payload: Any, docs_base: str | None = None) -> Call:
        """The request, checked for what the service reads; the rest is tolerated."""
        if not isinstance(payload, dict):
            raise InvalidJson("the request body must be a JSON object")
        if depth(payload.get("context"), MAX_DEPTH) > MAX_DEPTH:
            raise RequestError(f"the request context nests deeper than {MAX_DEPTH} levels")
        try:
            request = CdsRequest.model_validate(payload)
        except ValidationError as exc:
            raise RequestError(f"invalid CDS Hooks request: {_describe(exc)}") from exc
        if request.hook != service.hook:
            raise WrongHook(f"service {service.id!r} answers {service.hook!r}, not {request.hook!r}")
        context = parse_context(request.hook, request.context)
        served = self.served
        # One FHIR fetch budget for the whole request, across both phases of patient-view.
        deadline = self.fetcher.deadline() if self.fetcher else 0.0
        facts = FactBuilder(served.ruleset, self.today())
        return Call(service, request, context, served, facts, deadline, docs_base or self.docs_base)

    async def about_anastrozole(self, call: Call) -> bool:
        """Whether the call is about anastrozole (SPEC §2); order and refill hooks also pick the
        orders acted on, repaired (SPEC §4: a single object where R4 wants a list)."""
        ctx = call.context
        if call.request.hook in ACTING_HOOKS:
            call.drafts = [
                repair(o)[0]
                for o in candidate_orders(ctx)
                if call.facts.is_medication(o, "anastrozole", ctx.drafts)
            ]
            return bool(call.drafts)
        call.data = await self._resolve(call, ABOUT_KEYS)
        bundle = bundle_resources(call.data["medications"])
        return any(
            r.get("resourceType") == "MedicationRequest"
            and r.get("status") == "active"
            and belongs_to(r, ctx.patient_id)
            and call.facts.is_medication(r, "anastrozole", bundle)
            for r in bundle
        )

    async def gather(self, call: Call) -> PatientData:
        """Every prefetch key, prefetched or fetched from the FHIR server (or 412)."""
        missing = tuple(key for key in PREFETCH_KEYS if key not in call.data)
        call.data |= await self._resolve(call, missing)
        patient = call.data["patient"]
        ctx = call.context
        if patient.get("resourceType") != "Patient":
            raise RequestError("prefetch.patient must be a Patient resource")
        if isinstance(patient.get("id"), str) and patient["id"] != ctx.patient_id:
            raise RequestError("prefetch.patient is a different patient from context.patientId")
        return PatientData(
            patient_id=ctx.patient_id,
            patient=patient,
            resources=[
                r for key in PREFETCH_KEYS if key != "patient" for r in bundle_resources(call.data[key])
            ],
            drafts=ctx.drafts,
            hook=call.request.hook,
            anastrozole_drafts=call.drafts,
        )

    def derive_facts(self, call: Call, patient: PatientData) -> list[Fact]:
        return call.facts.build(patient)

    def evaluate(self, call: Call, facts: list[Fact]) -> list[Firing]:
        """The firings, without the rules the caller's settings switch off (SPEC §8): those
        leave no card, no audit row and no count."""
        firings = call.served.engine.evaluate(facts)
        off = call.caller.settings.rules_off
        return [f for f in firings if f.rule_id not in off] if off else firings

    def build_cards(self, call: Call, facts: list[Fact], firings: list[Firing]) -> list[Issued]:
        """The cards, each with what it rests on (evidence fingerprint, draft dose) for snoozes."""
        builder = CardBuilder(
            call.served.ruleset,
            call.facts.today,
            docs_base=call.docs_base,
            on_not_offered=self.on_not_offered,
        )
        cards = builder.build(
            firings,
            patient_id=call.context.patient_id,
            sex=str(facts[0].fields["sex"]),
            drafts=call.drafts,
            on_testosterone=bool(facts[0].fields["on_testosterone"]),
        )
        return issued(cards, firings, call.drafts)

    async def record(self, call: Call, cards: list[Issued]) -> list[Card]:
        """Snoozes, silent mode and repeated alerts applied; every card audited (SPEC §6, §8)."""
        if not cards:
            return []
        if self.recorder is None:
            return [] if call.caller.settings.silent else [c.card for c in cards]
        request, served = call.request, call.served
        return await self.recorder.record(
            cards,
            call.service,
            request.hookInstance,
            call.context,
            served.ruleset.version,
            call.caller,
            call.drafts,
        )

    async def _resolve(self, call: Call, keys: tuple[str, ...]) -> dict[str, Any]:
        return await resolve(call.request, keys, call.served.templates, self.fetcher, call.deadline)
