"""Loading and validating the medication class files, ``rules/classes/<class>.yaml`` (SPEC §2).

Each file is one class (the file name is its id): a dated snapshot of RxNorm codes from
published value sets, written by ``scripts/build-drug-classes``. Per member: its ingredients
and every concept containing them (codes), and its ingredient and brand names (the text
fallback); ``not_members`` are codes the rule set knows are not the class. Problems are
reported as ``file:line: message``; the lookups matching needs are built here, once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from service.ruleset.model import RULE_ID, MedicationClass, MedicationMember, Medications, Membership
from service.ruleset.yamlfile import Problems, read_yaml

CLASS_DIR = "classes"
# The classes the service reads, and the groups a class's members must each name.
REQUIRED_CLASSES: dict[str, frozenset[str]] = {
    "anastrozole": frozenset(),
    "testosterone": frozenset(),
    "bone-agent": frozenset({"bisphosphonate", "denosumab", "anabolic"}),
}
CONCEPT_TTYS = frozenset(
    {"IN", "PIN", "IN/PIN", "MIN", "BN", "SCD", "SBD", "SCDC", "SBDC", "SCDF", "SBDF", "SCDG", "SBDG"}
    | {"GPCK", "BPCK"}
)
RXCUI = re.compile(r"^[0-9]{1,10}$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_WORD = re.compile(r"\w+")


def class_files(root: Path) -> list[Path]:
    """Every ``classes/<class>.yaml`` of a rule set folder, sorted."""
    return sorted((root / CLASS_DIR).glob("*.yaml"))


def name_key(text: str) -> str:
    """How a name is looked up: its words in lower case, one space apart ("depo testosterone")."""
    return " ".join(_WORD.findall(text.lower()))


def _name_starts(keys: set[str]) -> dict[str, tuple[tuple[str, ...], ...]]:
    starts: dict[str, list[tuple[str, ...]]] = {}
    for key in sorted(keys, key=lambda k: (-len(k.split(" ")), k)):
        words = tuple(key.split(" "))
        starts.setdefault(words[0], []).append(words)
    return {word: tuple(names) for word, names in starts.items()}


def _codes(raw: Any, where: tuple[Any, ...], problems: Problems, *, tty: bool) -> list[str]:
    """The RxCUIs of a list of ``{rxcui, display[, tty]}`` entries; problems for bad entries."""
    if raw is None or raw == []:
        return []
    if not isinstance(raw, list):
        problems.add(where, "expected a list of {rxcui, display} entries")
        return []
    codes = []
    for i, entry in enumerate(raw):
        here = (*where, i)
        if not isinstance(entry, dict):
            problems.add(here, "each entry is a mapping {rxcui, display}")
            continue
        code = entry.get("rxcui")
        if not isinstance(code, str) or not RXCUI.match(code):
            problems.add((*here, "rxcui"), f"rxcui must be a quoted numeric RxNorm code, not {code!r}")
            continue
        if not isinstance(entry.get("display"), str) or not entry["display"].strip():
            problems.add((*here, "display"), f"RxNorm {code} needs its display")
        if tty and entry.get("tty") not in CONCEPT_TTYS:
            problems.add((*here, "tty"), f"RxNorm {code}: tty must be one of {sorted(CONCEPT_TTYS)}")
        codes.append(code)
    return codes


def _names(raw: Any, where: tuple[Any, ...], problems: Problems) -> list[str]:
    names = []
    for i, entry in enumerate(raw if isinstance(raw, list) else []):
        name = entry.get("name") if isinstance(entry, dict) else entry
        if not isinstance(name, str) or not name_key(name):
            problems.add((*where, i), "a name is a non-empty text ({name: ...})")
            continue
        names.append(name)
    return names


def _member(
    member_id: Any, spec: Any, groups: frozenset[str], where: tuple[Any, ...], problems: Problems
) -> MedicationMember | None:
    if not isinstance(member_id, str) or not RULE_ID.match(member_id):
        problems.add(where, f"member id {member_id!r} must be kebab-case")
        return None
    if not isinstance(spec, dict):
        problems.add(where, "a member is a mapping with ingredients, concepts and names")
        return None
    ingredients = _codes(spec.get("ingredients"), (*where, "ingredients"), problems, tty=False)
    concepts = _codes(spec.get("concepts"), (*where, "concepts"), problems, tty=True)
    names = _names(spec.get("names"), (*where, "names"), problems)
    if not ingredients:
        problems.add(where, f"member {member_id!r} needs at least one ingredient code")
    if not names:
        problems.add(where, f"member {member_id!r} needs at least one name (ingredient or brand)")
    group = spec.get("group", "")
    if groups and group not in groups:
        problems.add((*where, "group"), f"member {member_id!r}: group must be one of {sorted(groups)}")
    elif not groups and group:
        problems.add((*where, "group"), "this class has no groups")
    return MedicationMember(member_id, str(group), frozenset(ingredients + concepts), tuple(names))


def _parse_class(path: Path, problems: Problems) -> MedicationClass | None:
    data = read_yaml(path, problems)
    if data is None:
        return None
    class_id = path.stem
    if not isinstance(data, dict):
        problems.add((), "a class file must be a mapping")
        return None
    if data.get("class", class_id) != class_id:
        problems.add(("class",), f"class {data.get('class')!r} must match the file name {class_id!r}")
    snapshot = data.get("snapshot_date")
    if not isinstance(snapshot, str) or not DATE.match(snapshot):
        problems.add(("snapshot_date",), 'snapshot_date must be a quoted date, "YYYY-MM-DD"')
    sources = data.get("source")
    source_ids = set()
    if not isinstance(sources, list) or not sources:
        problems.add(("source",), "source must list where the codes came from (value set, OID, expansion)")
    else:
        for i, src in enumerate(sources):
            if not isinstance(src, dict) or not all(isinstance(src.get(k), str) for k in ("id", "oid")):
                problems.add(("source", i), "a source needs an id and the value set's oid")
            else:
                source_ids.add(src["id"])
    groups = REQUIRED_CLASSES.get(class_id, frozenset())
    raw_members = data.get("members")
    if not isinstance(raw_members, dict) or not raw_members:
        problems.add(("members",), "a class needs members")
        raw_members = {}
    members = []
    for member_id, spec in raw_members.items():
        member = _member(member_id, spec, groups, ("members", member_id), problems)
        if member is not None:
            members.append(member)
            for key in ("ingredients", "concepts"):
                _check_from(spec.get(key), source_ids, ("members", member_id, key), problems)
    excluded: set[str] = set()
    raw_not = data.get("not_members") or []
    for i, block in enumerate(raw_not if isinstance(raw_not, list) else [None]):
        if not isinstance(block, dict) or not isinstance(block.get("reason"), str):
            problems.add(("not_members", i), "not_members entries are {reason, concepts}")
            continue
        excluded.update(_codes(block.get("concepts"), ("not_members", i, "concepts"), problems, tty=True))
        _check_from(block.get("concepts"), source_ids, ("not_members", i, "concepts"), problems)
    contradictory = excluded & frozenset().union(*(m.codes for m in members))
    if contradictory:
        problems.add(("not_members",), f"codes both members and not_members: {sorted(contradictory)}")
    return MedicationClass(class_id, path, str(snapshot), tuple(members), frozenset(excluded))


def _check_from(raw: Any, source_ids: set[str], where: tuple[Any, ...], problems: Problems) -> None:
    """Each code's ``from`` names sources listed in the file's ``source``."""
    for i, entry in enumerate(raw if isinstance(raw, list) else []):
        cited = entry.get("from", []) if isinstance(entry, dict) else []
        unknown = [c for c in cited if c not in source_ids] if isinstance(cited, list) else [cited]
        if unknown:
            problems.add((*where, i, "from"), f"from names sources not in source: {unknown}")


def index(classes: dict[str, MedicationClass]) -> Medications:
    """The lookups by code and by name (built once per rule set, never per call)."""
    by_code: dict[str, set[Membership]] = {}
    by_name: dict[str, set[Membership]] = {}
    for cls in classes.values():
        for code in cls.not_members:
            by_code.setdefault(code, set())
        for member in cls.members:
            membership = Membership(cls.id, member.id, member.group)
            for code in member.codes:
                by_code.setdefault(code, set()).add(membership)
            for name in member.names:
                by_name.setdefault(name_key(name), set()).add(membership)
    return Medications(
        classes=classes,
        by_code={code: frozenset(found) for code, found in by_code.items()},
        by_name={key: frozenset(found) for key, found in by_name.items()},
        name_starts=_name_starts(set(by_name)),
    )


def load_classes(root: Path, problems: Problems, files: list[Path] | None = None) -> Medications:
    """The class files ``files`` (default: every one of ``root``); problems (file:line) are
    added to ``problems``. A named file that is missing is reported by the manifest check."""
    classes: dict[str, MedicationClass] = {}
    for path in class_files(root) if files is None else [f for f in files if f.is_file()]:
        cls = _parse_class(path, problems)
        if cls is not None:
            classes[cls.id] = cls
    for required in REQUIRED_CLASSES:
        if required not in classes:
            problems.items.append(f"{root / CLASS_DIR / (required + '.yaml')}:1: missing medication class")
    owners: dict[str, str] = {}
    for cls in classes.values():
        for member in cls.members:
            if member.id in owners:
                problems.items.append(
                    f"{cls.path}:1: member {member.id!r} is also a member of {owners[member.id]!r}"
                )
            owners[member.id] = cls.id
    return index(classes)
