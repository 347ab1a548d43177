"""The medication class files (rules/classes/*.yaml) load, and broken ones are refused with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import RuleSetError
from service.ruleset.classes import REQUIRED_CLASSES, RXCUI, class_files, name_key
from service.ruleset.loader import load_ruleset
from service.ruleset.model import Membership, RuleSet
from service.settings import PACKAGED_RULES_DIR


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def refused(rules_dir: Path, message: str) -> tuple[str, int]:
    with pytest.raises(RuleSetError) as info:
        load_ruleset(rules_dir)
    problem = next((p for p in info.value.problems if message in p), None)
    assert problem is not None, info.value.problems
    file_part, line, _ = problem.split(":", 2)
    return file_part, int(line)


def test_the_packaged_rule_set_has_the_three_classes_one_file_each(ruleset: RuleSet) -> None:
    assert set(ruleset.medications.classes) == set(REQUIRED_CLASSES)
    assert [p.stem for p in class_files(PACKAGED_RULES_DIR)] == sorted(REQUIRED_CLASSES)


def test_every_code_is_a_numeric_rxnorm_code(ruleset: RuleSet) -> None:
    for cls in ruleset.medications.classes.values():
        assert cls.codes and all(RXCUI.match(code) for code in cls.codes | cls.not_members)


def test_every_bone_agent_member_has_one_of_the_three_groups(ruleset: RuleSet) -> None:
    bone = ruleset.medications["bone-agent"]
    groups = {m.id: m.group for m in bone.members}
    assert set(groups.values()) == {"bisphosphonate", "denosumab", "anabolic"}
    assert {m for m, g in groups.items() if g == "anabolic"} == {
        "teriparatide",
        "abaloparatide",
        "romosozumab",
    }
    assert groups["denosumab"] == "denosumab" and groups["zoledronic-acid"] == "bisphosphonate"


def test_a_class_holds_its_members_codes_and_names(ruleset: RuleSet) -> None:
    anastrozole = ruleset.medications["anastrozole"]
    assert {"84857", "199224", "151124"} <= anastrozole.codes
    assert anastrozole.names == ("anastrozole", "Arimidex")
    assert anastrozole.member("anastrozole").codes == anastrozole.codes


def test_known_non_members_are_known_codes_with_no_membership(ruleset: RuleSet) -> None:
    assert ruleset.medications.by_code["72965"] == frozenset()  # letrozole
    assert ruleset.medications.by_code["993449"] == {Membership("bone-agent", "denosumab", "denosumab")}


def test_name_keys_ignore_case_and_separators() -> None:
    assert name_key("Depo-Testosterone") == name_key("depo  testosterone") == "depo testosterone"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('{rxcui: "993452",', "{rxcui: 993452,", "quoted numeric RxNorm code"),
        ('{rxcui: "993452",', '{rxcui: "99-3452",', "quoted numeric RxNorm code"),
        ('tty: SCD, display: "1 ML denosumab', 'tty: XYZ, display: "1 ML denosumab', "tty must be one of"),
        ("    group: denosumab\n", "    group: antiresorptive\n", "group must be one of"),
        ("    group: denosumab\n", "", "group must be one of"),
        ('snapshot_date: "', 'snapshot_date: "x', "snapshot_date must be"),
        ('from: ["1078.126"', 'from: ["no-such-source"', "from names sources not in source"),
    ],
)
def test_a_broken_bone_agent_file_is_refused_with_file_and_line(
    rules_copy: Path, old: str, new: str, message: str
) -> None:
    path = rules_copy / "classes" / "bone-agent.yaml"
    edit(path, old, new)
    file_part, line = refused(rules_copy, message)
    assert file_part == str(path) and line > 1


def test_a_member_without_names_is_refused(rules_copy: Path) -> None:
    path = rules_copy / "classes" / "anastrozole.yaml"
    text = path.read_text(encoding="utf-8")
    start = text.index("    names:\n")
    end = text.index("not_members:")
    path.write_text(text[:start] + "    names: []\n" + text[end:], encoding="utf-8")
    file_part, _ = refused(rules_copy, "needs at least one name")
    assert file_part == str(path)


def test_a_member_without_ingredients_is_refused(rules_copy: Path) -> None:
    path = rules_copy / "classes" / "anastrozole.yaml"
    lines = path.read_text(encoding="utf-8").split("\n")
    at = lines.index("    ingredients:")
    assert lines[at + 1].startswith('      - {rxcui: "84857"')
    lines[at : at + 2] = ["    ingredients: []"]
    path.write_text("\n".join(lines), encoding="utf-8")
    file_part, _ = refused(rules_copy, "needs at least one ingredient code")
    assert file_part == str(path)


def test_a_code_both_member_and_not_member_is_refused(rules_copy: Path) -> None:
    path = rules_copy / "classes" / "anastrozole.yaml"
    edit(
        path,
        '      - {rxcui: "10324",',
        '      - {rxcui: "199224", tty: SCD, display: "x", from: []}\n      - {rxcui: "10324",',
    )
    refused(rules_copy, "both members and not_members")


def test_a_missing_class_file_is_refused(rules_copy: Path) -> None:
    (rules_copy / "classes" / "testosterone.yaml").unlink()
    file_part, line = refused(rules_copy, "missing medication class")
    assert file_part.endswith("classes/testosterone.yaml") and line == 1


def test_a_member_in_two_classes_is_refused(rules_copy: Path) -> None:
    edit(rules_copy / "classes" / "testosterone.yaml", "  methyltestosterone:\n", "  anastrozole:\n")
    refused(rules_copy, "is also a member of")


def test_a_class_named_differently_from_its_file_is_refused(rules_copy: Path) -> None:
    edit(rules_copy / "classes" / "testosterone.yaml", "class: testosterone", "class: androgen")
    refused(rules_copy, "must match the file name")
