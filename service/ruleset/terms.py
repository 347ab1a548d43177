"""Reading the clinical vocabulary of ``rules/ruleset.yaml`` beyond plain code lists.

DXA result codes by skeletal site (and which sites are central), the words that name an
estradiol assay, the codes that win a same-instant tie, and unit conversions (divisors or
factors). Problems are reported through the loader's ``add(where, message)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.ruleset.model import ClinicalTerms, DxaSite

Add = Callable[[tuple[Any, ...], str], None]
CodeSet = Callable[[Any, tuple[Any, ...]], frozenset[tuple[str, str]]]


def _words(value: Any, where: tuple[Any, ...], add: Add) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(w, str) and w.strip() for w in value):
        add(where, "expected a list of words")
        return ()
    return tuple(w.strip() for w in value)


def parse_terms(head: dict[str, Any], code_set: CodeSet, add: Add) -> ClinicalTerms:
    """The ``dxa_sites``, ``other_forearm_regions``, ``assays`` and ``preferred`` sections."""
    sites: dict[tuple[str, str], DxaSite] = {}
    spec = head.get("dxa_sites") or {}
    if not isinstance(spec, dict):
        add(("dxa_sites",), "dxa_sites must map a site name to {central, loinc: [...]}")
        spec = {}
    for name, site in spec.items():
        where = ("dxa_sites", name)
        if not isinstance(site, dict) or not isinstance(site.get("central"), bool):
            add(where, "a DXA site needs central: true or false")
            continue
        codes = {k: v for k, v in site.items() if k not in ("central", "forearm")}
        for pair in code_set(codes, where):
            if pair in sites:
                add(where, f"code {pair[1]} is already listed under site {sites[pair].name!r}")
            sites[pair] = DxaSite(str(name), site["central"], bool(site.get("forearm", False)))
    assays = head.get("assays") or {}
    if not isinstance(assays, dict):
        add(("assays",), "assays must be a mapping")
        assays = {}
    preferred_spec = head.get("preferred") or {}
    if not isinstance(preferred_spec, dict):
        add(("preferred",), "preferred must map a code list name to codes")
        preferred_spec = {}
    return ClinicalTerms(
        dxa_sites=sites,
        other_forearm_regions=_words(head.get("other_forearm_regions"), ("other_forearm_regions",), add),
        mass_spectrometry=_words(assays.get("mass_spectrometry"), ("assays", "mass_spectrometry"), add),
        immunoassay=_words(assays.get("immunoassay"), ("assays", "immunoassay"), add),
        immunoassay_codes=(
            code_set(assays["immunoassay_codes"], ("assays", "immunoassay_codes"))
            if "immunoassay_codes" in assays
            else frozenset()
        ),
        preferred={str(n): code_set(c, ("preferred", n)) for n, c in preferred_spec.items()},
        dxa_sides=_sides(head.get("dxa_sides"), code_set, add),
        cross_calibrations=_cross_calibrations(head.get("bmd_cross_calibrations"), add),
    )


def _sides(spec: Any, code_set: CodeSet, add: Add) -> dict[tuple[str, str], str]:
    """``dxa_sides: {left: {loinc: [...]}, right: {...}}``: result codes that name a side."""
    if spec is None:
        return {}
    if not isinstance(spec, dict) or not set(spec) <= {"left", "right"}:
        add(("dxa_sides",), "dxa_sides maps left and right to code lists")
        return {}
    return {pair: str(side) for side, codes in spec.items() for pair in code_set(codes, ("dxa_sides", side))}


def _cross_calibrations(spec: Any, add: Add) -> tuple[frozenset[str], ...]:
    """``bmd_cross_calibrations``: each ``{devices: [key, key, ...], study: text}``.

    A declaration says an in-vivo cross-calibration was done between these DXA systems, so
    their BMD results may be compared with one another.
    """
    if spec is None:
        return ()
    groups = []
    if not isinstance(spec, list):
        add(("bmd_cross_calibrations",), "bmd_cross_calibrations must be a list")
        return ()
    for i, item in enumerate(spec):
        devices = item.get("devices") if isinstance(item, dict) else None
        study = item.get("study") if isinstance(item, dict) else None
        if (
            not isinstance(devices, list)
            or len(devices) < 2
            or not all(isinstance(d, str) and d.strip() for d in devices)
            or not isinstance(study, str)
            or not study.strip()
        ):
            add(
                ("bmd_cross_calibrations", i),
                "a cross-calibration needs devices: [two or more device keys] and study: what was done",
            )
            continue
        groups.append(frozenset(d.strip() for d in devices))
    return tuple(groups)


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def parse_units(spec: Any, add: Add) -> dict[str, tuple[str, dict[str, float]]]:
    """Unit conversions: ``divisors`` (value ÷ d) and ``factors`` (value × f) to the target unit."""
    units: dict[str, tuple[str, dict[str, float]]] = {}
    for name, entry in (spec or {}).items():
        where = ("units", name)
        if not isinstance(entry, dict) or not isinstance(entry.get("target"), str):
            add(where, "units need a target unit")
            continue
        divisors, factors = entry.get("divisors") or {}, entry.get("factors") or {}
        if not isinstance(divisors, dict) or not isinstance(factors, dict) or not (divisors or factors):
            add(where, "units need divisors and/or factors")
            continue
        if not all(_positive(v) for v in (*divisors.values(), *factors.values())):
            add(where, "unit divisors and factors must be positive numbers")
            continue
        both = set(divisors) & set(factors)
        if both:
            add(where, f"unit {sorted(both)[0]!r} is both a divisor and a factor")
        table = {str(k): float(v) for k, v in divisors.items()}
        table |= {str(k): 1.0 / float(v) for k, v in factors.items()}
        units[str(name)] = (entry["target"], table)
    return units
