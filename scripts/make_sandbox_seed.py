"""Generate the FHIR sandbox seed from the rule scenario cases.

    .venv/bin/python scripts/make_sandbox_seed.py           # (re)write the two files below
    .venv/bin/python scripts/make_sandbox_seed.py --check   # exit 1 if they are out of date

Writes

- ``tests/fixtures/sandbox-seed.json``: one FHIR transaction Bundle with a ``PUT {type}/{id}``
  entry for every prefetch resource of every *seedable* case;
- ``tests/fixtures/sandbox-cases.json``: per seeded case, its path, service, expected and
  forbidden rule ids, and the full CDS Hooks request with the same (rewritten) ids.

Dates stay as ``{{today-Nd}}`` tokens so the files never rot; they are rolled with
``service.ruleset.scenarios.roll_dates`` when the sandbox is seeded and when the requests are sent,
with one and the same ``today``.

Ids: a server holds every case at once, so non-Patient resource ids are prefixed with the
patient id (``e2-1`` of patient ``le-1`` becomes ``le-1.e2-1``), and a patient id used by two
cases gets a suffix. A case is seedable when its request has every prefetch key, and the
server, searched with the declared prefetch queries, would give back exactly what the case
prefetches: every resource names the case's patient as ``subject``, nothing is referenced
from outside the prefetch (a search by patient would not return it), and each key holds
exactly the resources its query selects among the case's resources. Other cases are left
out and listed on stderr with the reason.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from service.pipeline.prefetch import PREFETCH_KEYS, prefetch_templates  # noqa: E402
from service.pipeline.registry import SERVICES  # noqa: E402
from service.ruleset.loader import load_ruleset  # noqa: E402
from service.ruleset.scenarios import Case, load_cases  # noqa: E402
from service.settings import PACKAGED_RULES_DIR  # noqa: E402

SEED_PATH = ROOT / "tests" / "fixtures" / "sandbox-seed.json"
CASES_PATH = ROOT / "tests" / "fixtures" / "sandbox-cases.json"
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
SERVICE_FOR_HOOK = {s.hook: s.id for s in SERVICES}


class NotSeedable(Exception):
    """The case cannot be reproduced by a FHIR server searched with the prefetch queries."""


def _references(value: Any) -> Iterator[dict[str, Any]]:
    """Every FHIR Reference-like object (a dict with a string ``reference``) inside ``value``."""
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            yield value
        for child in value.values():
            yield from _references(child)
    elif isinstance(value, list):
        for child in value:
            yield from _references(child)


def _queries(templates: dict[str, str]) -> dict[str, tuple[str, dict[str, str]]]:
    """key -> (resource type, search parameters) of each declared search template."""
    out = {}
    for key, template in templates.items():
        path, _, query = template.partition("?")
        out[key] = (path.split("/")[0], dict(parse_qsl(query)))
    return out


def _selected(query: tuple[str, dict[str, str]], resource: dict[str, Any]) -> bool:
    """Would a FHIR server return ``resource`` for this search (the patient already matches)?"""
    rtype, params = query
    if resource.get("resourceType") != rtype:
        return False
    for name, value in params.items():
        if name == "patient":
            continue
        if name == "status":
            if resource.get("status") not in value.split(","):
                return False
        elif name == "code":
            # A token "system|code" matches that coding; a bare "code" matches it in any system.
            tokens = value.split(",")
            wanted = {tuple(v.split("|", 1)) for v in tokens if "|" in v}
            bare = {v for v in tokens if "|" not in v}
            # MedicationRequest/MedicationStatement: ``code`` searches medication.as(CodeableConcept).
            field = "medicationCodeableConcept" if rtype.startswith("Medication") else "code"
            concept = resource.get(field)
            codings = concept.get("coding") if isinstance(concept, dict) else None
            if not isinstance(codings, list) or not any(
                isinstance(c, dict) and ((c.get("system"), c.get("code")) in wanted or c.get("code") in bare)
                for c in codings
            ):
                return False
        else:  # a template parameter this check does not know: refuse rather than guess
            raise NotSeedable(f"cannot check search parameter {name!r} of {rtype}")
    return True


def _entries(bundle: Any, key: str) -> list[dict[str, Any]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise NotSeedable(f"prefetch {key} is not a Bundle")
    resources = []
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            raise NotSeedable(f"prefetch {key} has an entry without a resource")
        resources.append(resource)
    return resources


def rewrite_case(
    case: Case, queries: dict[str, tuple[str, dict[str, str]]], patient_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The id-rewritten request and the resources to seed; raises NotSeedable."""
    request = copy.deepcopy(case.request)
    prefetch = request.get("prefetch")
    if not isinstance(prefetch, dict) or any(not prefetch.get(key) for key in PREFETCH_KEYS):
        raise NotSeedable(f"the request does not prefetch all {len(PREFETCH_KEYS)} keys")
    context = request.get("context") or {}
    old_pid = context.get("patientId")
    patient = prefetch["patient"]
    if (
        not isinstance(patient, dict)
        or patient.get("resourceType") != "Patient"
        or patient.get("id") != old_pid
    ):
        raise NotSeedable("prefetch patient is not the context patient")

    by_key = {key: _entries(prefetch[key], key) for key in PREFETCH_KEYS if key != "patient"}
    mapping: dict[str, str] = {f"Patient/{old_pid}": f"Patient/{patient_id}"}
    seen: dict[str, dict[str, Any]] = {}
    for key, resources in by_key.items():
        for resource in resources:
            subject = resource.get("subject")
            if not isinstance(subject, dict) or subject.get("reference") != f"Patient/{old_pid}":
                raise NotSeedable(f"prefetch {key} holds a resource whose subject is not Patient/{old_pid}")
            rid = resource.get("id")
            if not isinstance(rid, str) or not FHIR_ID.match(rid):
                raise NotSeedable(f"prefetch {key} holds a resource without a valid id")
            ref = f"{resource['resourceType']}/{rid}"
            if ref in seen and seen[ref] != resource:
                raise NotSeedable(f"two different resources share the id {ref}")
            seen[ref] = resource
            new_id = f"{patient_id}.{rid}"
            if not FHIR_ID.match(new_id):
                raise NotSeedable(f"rewritten id {new_id!r} is not a valid FHIR id")
            mapping[ref] = f"{resource['resourceType']}/{new_id}"

    # The server returns a key's resources only if its search selects them, and selects
    # nothing that the case put under another key.
    for key, resources in by_key.items():
        everything = [r for rs in by_key.values() for r in rs]
        wanted = {id(r) for r in resources}
        for resource in everything:
            if _selected(queries[key], resource) != (id(resource) in wanted):
                ref = f"{resource['resourceType']}/{resource['id']}"
                raise NotSeedable(f"the {key} query would not return exactly the prefetched {key} ({ref})")

    # References from outside the prefetch (draft orders, selections) must not point at a
    # prefetch resource other than the patient: the rewrite would not follow them.
    outside = {k: v for k, v in request.items() if k != "prefetch"}
    for ref in _references(outside):
        if ref["reference"] in mapping and not ref["reference"].startswith("Patient/"):
            raise NotSeedable(f"{ref['reference']} is referenced from outside the prefetch")
    for selection in context.get("selections") or []:
        if selection in mapping:
            raise NotSeedable(f"selection {selection} names a prefetch resource")

    # Rewrite: ids of prefetch resources, references inside the prefetch, the patient everywhere.
    for resources in by_key.values():
        for resource in resources:
            resource["id"] = mapping[f"{resource['resourceType']}/{resource['id']}"].split("/", 1)[1]
    for ref in _references(prefetch):
        ref["reference"] = mapping.get(ref["reference"], ref["reference"])
    if patient_id != old_pid:
        patient["id"] = patient_id
        context["patientId"] = patient_id
        for ref in _references(outside):
            if ref["reference"] == f"Patient/{old_pid}":
                ref["reference"] = f"Patient/{patient_id}"

    seed = [patient]
    unique: dict[str, dict[str, Any]] = {}
    for resources in by_key.values():
        for resource in resources:
            unique.setdefault(f"{resource['resourceType']}/{resource['id']}", resource)
    seed.extend(unique.values())
    return request, copy.deepcopy(seed)


def build(rules_dir: Path = PACKAGED_RULES_DIR) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(seed transaction Bundle, cases document, skipped-case messages)."""
    queries = _queries(prefetch_templates(load_ruleset(rules_dir)))
    entries: list[dict[str, Any]] = []
    cases: list[dict[str, Any]] = []
    skipped: list[str] = []
    used_pids: set[str] = set()
    seeded_refs: set[str] = set()
    for case in load_cases(rules_dir):
        rel = case.path.relative_to(ROOT).as_posix() if case.path.is_relative_to(ROOT) else str(case.path)
        pid = str((case.request.get("context") or {}).get("patientId"))
        candidate, n = pid, 1
        while candidate in used_pids:
            n += 1
            candidate = f"{pid}-{n}"
        try:
            if not FHIR_ID.match(candidate):
                raise NotSeedable(f"patient id {candidate!r} is not a valid FHIR id")
            request, resources = rewrite_case(case, queries, candidate)
            refs = {f"{r['resourceType']}/{r['id']}" for r in resources}
            if refs & seeded_refs:
                raise NotSeedable(f"ids already used by another case: {sorted(refs & seeded_refs)}")
        except NotSeedable as exc:
            skipped.append(f"{rel}: {exc}")
            continue
        used_pids.add(candidate)
        seeded_refs |= refs
        for resource in resources:
            entries.append(
                {
                    "resource": resource,
                    "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
                }
            )
        cases.append(
            {
                "path": rel,
                "service": case.service or SERVICE_FOR_HOOK[str(request.get("hook"))],
                "patientId": candidate,
                "expect": list(case.expect),
                "forbid": list(case.forbid),
                "request": request,
            }
        )
    seed = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    doc = {
        "_comment": "Generated by scripts/make_sandbox_seed.py from rules/*/*/cases; do not edit. "
        "Dates are {{today-Nd}} tokens, rolled with service.ruleset.scenarios.roll_dates.",
        "seed": SEED_PATH.relative_to(ROOT).as_posix(),
        "cases": cases,
    }
    return seed, doc, skipped


def dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the files are out of date")
    args = parser.parse_args(argv)
    seed, doc, skipped = build()
    for message in skipped:
        sys.stderr.write(f"not seeded: {message}\n")
    outputs = {SEED_PATH: dump(seed), CASES_PATH: dump(doc)}
    if args.check:
        stale = [p for p, text in outputs.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
        for path in stale:
            sys.stderr.write(f"{path.relative_to(ROOT)} is out of date: run scripts/make_sandbox_seed.py\n")
        return 1 if stale else 0
    for path, text in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    sys.stdout.write(
        f"wrote {SEED_PATH.relative_to(ROOT)} ({len(seed['entry'])} resources) and "
        f"{CASES_PATH.relative_to(ROOT)} ({len(doc['cases'])} cases, {len(skipped)} not seeded)\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
