"""The three CDS services and the pipeline every hook call goes through.

look up the service -> validate the request -> is it about anastrozole? -> prefetch
-> derive facts -> evaluate the rules -> build cards
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pydantic import ValidationError

from cds_hooks.models import Card, CdsRequest, CdsResponse, Discovery, Service
from service.audit import AuditWriter
from service.cards import CardBuilder
from service.engine import RuleEngine
from service.errors import RequestError, UnknownService, WrongHook
from service.facts import FactBuilder, PatientData
from service.fhir import belongs_to, bundle_resources, depth
from service.fhir_client import FhirFetcher
from service.hooks import ORDER_HOOKS, candidate_orders, parse_context
from service.prefetch import PREFETCH_KEYS, prefetch_templates, resolve
from service.ruleset import RuleSet
from service.snoozes import SnoozeCache
from service.store import CardRecord, Store


@dataclass(frozen=True)
class ServiceDefinition:
    id: str
    hook: str
    title: str
    description: str


SERVICES = (
    ServiceDefinition(
        "anastrozole-bone-order-select",
        "order-select",
        "Bone health check when anastrozole is selected",
        "When anastrozole is selected for a patient, checks DXA, estradiol and 25-OH vitamin D "
        "monitoring and suggests dose titration or antiresorptive therapy where bone is at risk.",
    ),
    ServiceDefinition(
        "anastrozole-bone-order-sign",
        "order-sign",
        "Bone health check before anastrozole is signed",
        "Before an anastrozole order is signed, checks DXA, estradiol and 25-OH vitamin D "
        "monitoring and suggests dose titration or antiresorptive therapy where bone is at risk.",
    ),
    ServiceDefinition(
        "anastrozole-bone-patient-view",
        "patient-view",
        "Bone health review for patients taking anastrozole",
        "When the chart of a patient with an active anastrozole prescription is opened, reviews "
        "DXA, estradiol and 25-OH vitamin D monitoring and bone-protective treatment.",
    ),
)


MAX_DEPTH = 64


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def utc_today() -> date:
    return datetime.now(UTC).date()


def utc_now() -> datetime:
    return datetime.now(UTC)


class Registry:
    """Owns the rule set, the engine and the service definitions; answers hook calls."""

    def __init__(
        self,
        ruleset: RuleSet,
        engine: RuleEngine,
        today: Callable[[], date] = utc_today,
        fetcher: FhirFetcher | None = None,
        store: Store | None = None,
        audit: AuditWriter | None = None,
        now: Callable[[], datetime] = utc_now,
        snoozes: SnoozeCache | None = None,
    ) -> None:
        self.ruleset = ruleset
        self.engine = engine
        self.today = today
        self.fetcher = fetcher
        self.store = store
        self.audit = audit
        self.now = now
        self.snoozes = snoozes
        self.services = {s.id: s for s in SERVICES}
        self._templates = prefetch_templates(ruleset)

    def install(self, ruleset: RuleSet, engine: RuleEngine) -> RuleEngine:
        """Serve a new rule set from now on; returns the engine it replaces (to close later).

        The three attributes change together, with no await in between, so every call sees
        one consistent set: each call also reads them once, at its start.
        """
        old = self.engine
        self.ruleset, self.engine, self._templates = ruleset, engine, prefetch_templates(ruleset)
        return old

    def discovery(self) -> Discovery:
        return Discovery(
            services=[
                Service(
                    hook=s.hook,
                    title=s.title,
                    description=s.description,
                    id=s.id,
                    prefetch=dict(self._templates),
                    usageRequirements=(
                        "Send the prefetch keys, or fhirServer with fhirAuthorization so missing data "
                        "can be read (Patient, MedicationRequest, Observation, Procedure: read access)."
                    ),
                )
                for s in SERVICES
            ]
        )

    def service_for_hook(self, hook: str) -> ServiceDefinition:
        for service in SERVICES:
            if service.hook == hook:
                return service
        raise RequestError(f"no Osteoguard service answers the hook {hook!r}")

    async def call(self, service_id: str, payload: Any) -> CdsResponse:
        """Answer one hook call (``payload`` is the parsed JSON body)."""
        service = self.services.get(service_id)
        if service is None:
            raise UnknownService(f"no CDS service with id {service_id!r}")
        if not isinstance(payload, dict):
            raise RequestError("the request body must be a JSON object")
        if depth(payload.get("context"), MAX_DEPTH) > MAX_DEPTH:
            # The drafts in the context are copied and re-validated for suggestions (recursive
            # steps); FHIR nests a dozen levels. Prefetch is only read at fixed shallow paths.
            raise RequestError(f"the request context nests deeper than {MAX_DEPTH} levels")
        try:
            request = CdsRequest.model_validate(payload)
        except ValidationError as exc:
            raise RequestError(f"invalid CDS Hooks request: {_describe(exc)}") from exc
        if request.hook != service.hook:
            raise WrongHook(f"service {service.id!r} answers {service.hook!r}, not {request.hook!r}")
        ctx = parse_context(request.hook, request.context)
        # One consistent rule set for the whole call, even if a reload lands meanwhile.
        ruleset, engine, templates = self.ruleset, self.engine, self._templates
        facts = FactBuilder(ruleset, self.today())
        # One FHIR fetch budget for the whole request, across both phases of patient-view.
        deadline = self.fetcher.deadline() if self.fetcher else 0.0

        async def data_for(keys: tuple[str, ...]) -> dict[str, Any]:
            return await resolve(request, keys, templates, self.fetcher, deadline)

        if request.hook in ORDER_HOOKS:
            pool = ctx.drafts
            drafts = [o for o in candidate_orders(ctx) if facts.is_medication(o, "anastrozole", pool)]
            if not drafts:
                return CdsResponse(cards=[])
            data = await data_for(PREFETCH_KEYS)
        else:
            drafts = []
            # Only the medications are needed to know whether the call is about anastrozole.
            first = await data_for(("medications",))
            meds = first["medications"]
            bundle = bundle_resources(meds)
            if not any(
                r.get("resourceType") == "MedicationRequest"
                and r.get("status") == "active"
                and belongs_to(r, ctx.patient_id)
                and facts.is_medication(r, "anastrozole", bundle)
                for r in bundle
            ):
                return CdsResponse(cards=[])
            data = first | await data_for(PREFETCH_KEYS[:1] + PREFETCH_KEYS[2:])

        patient = data["patient"]
        if patient.get("resourceType") != "Patient":
            raise RequestError("prefetch.patient must be a Patient resource")
        if isinstance(patient.get("id"), str) and patient["id"] != ctx.patient_id:
            raise RequestError("prefetch.patient is a different patient from context.patientId")
        resources = [r for key in PREFETCH_KEYS[1:] for r in bundle_resources(data[key])]
        patient_data = PatientData(
            patient_id=ctx.patient_id,
            patient=patient,
            resources=resources,
            drafts=ctx.drafts,
            hook=request.hook,
            anastrozole_drafts=drafts,
        )
        fact_list = facts.build(patient_data)
        firings = engine.evaluate(fact_list)
        cards = CardBuilder(ruleset, facts.today).build(
            firings,
            patient_id=ctx.patient_id,
            sex=str(fact_list[0].fields["sex"]),
            drafts=drafts,
        )
        if cards and self.store is not None:
            cards = await self._record(cards, service, request, ctx.patient_id, ruleset.version)
        return CdsResponse(cards=cards)

    async def _record(
        self,
        cards: list[Card],
        service: ServiceDefinition,
        request: CdsRequest,
        patient_id: str,
        version: str,
    ) -> list[Card]:
        """Drop cards the clinician snoozed for this patient; queue the rest for the audit."""
        assert self.store is not None
        now = self.now()
        patient_key = self.store.patient_key(patient_id)
        snoozed = self.snoozes.snoozed(patient_key) if self.snoozes is not None else set()
        kept = [c for c in cards if c.source.topic is None or c.source.topic.code not in snoozed]
        if self.audit is not None:
            self.audit.submit(
                [
                    CardRecord(
                        uuid=str(card.uuid),
                        rule_id=str(card.source.topic.code if card.source.topic else ""),
                        service_id=service.id,
                        hook=service.hook,
                        hook_instance=request.hookInstance[:200],
                        ruleset_version=version,
                        patient_key=patient_key,
                        suggestion_uuids=tuple(str(s.uuid) for s in card.suggestions),
                        issued_at=now,
                    )
                    for card in kept
                ]
            )
        return kept
