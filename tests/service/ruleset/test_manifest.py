"""The manifest: only the rules and classes ruleset.yaml names load, and all of them must be there."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.errors import RuleSetError
from service.ruleset.loader import load_ruleset
from tests.service.ruleset.conftest import edit


def refused(rules_dir: Path) -> list[str]:
    with pytest.raises(RuleSetError) as info:
        load_ruleset(rules_dir)
    return info.value.problems


def test_every_rule_folder_of_the_packaged_set_is_named(mounted_rules: Path) -> None:
    ruleset = load_ruleset(mounted_rules)
    assert sorted(f"{r.category}/{r.id}" for r in ruleset.rules) == sorted(
        p.parent.relative_to(mounted_rules).as_posix() for p in mounted_rules.glob("*/*/rule.yaml")
    )


def test_a_deleted_rule_folder_is_refused(mounted_rules: Path) -> None:
    shutil.rmtree(mounted_rules / "dosing/low-estradiol")
    assert refused(mounted_rules) == [
        f"{mounted_rules / 'dosing/low-estradiol'}:1: rule folder named in ruleset.yaml rules: is missing"
    ]


def test_a_rule_folder_without_its_rule_file_is_refused(mounted_rules: Path) -> None:
    (mounted_rules / "dosing/low-estradiol/rule.yaml").unlink()
    (problem,) = refused(mounted_rules)
    assert problem.startswith(f"{mounted_rules / 'dosing/low-estradiol/rule.yaml'}:1: missing")


def test_a_stray_folder_the_manifest_does_not_name_is_refused(mounted_rules: Path) -> None:
    stray = mounted_rules / "monitoring/vitamin-d-copy"
    shutil.copytree(mounted_rules / "monitoring/vitamin-d", stray)
    (problem,) = refused(mounted_rules)
    assert problem.startswith(f"{stray}:1: rule folder not named in ruleset.yaml rules:")


def test_a_half_copied_folder_without_a_rule_file_is_refused(rules_copy: Path) -> None:
    stray = rules_copy / "treatment/calcium"
    shutil.copytree(rules_copy / "monitoring/vitamin-d/cases", stray / "cases")
    assert any(p.startswith(f"{stray}:1: rule folder not named") for p in refused(rules_copy))


def test_a_rule_named_twice_is_refused(mounted_rules: Path) -> None:
    edit(mounted_rules / "ruleset.yaml", "  - monitoring/vitamin-d\n", "  - monitoring/vitamin-d\n" * 2)
    (problem,) = refused(mounted_rules)
    assert "ruleset.yaml:" in problem and "rules names 'monitoring/vitamin-d' twice" in problem


@pytest.mark.parametrize(
    "entry", ["vitamin-d", "monitoring/vitamin-d/rule.yaml", "../monitoring/x", "classes/x"]
)
def test_an_entry_that_is_not_a_rule_folder_is_refused(mounted_rules: Path, entry: str) -> None:
    edit(
        mounted_rules / "ruleset.yaml",
        "  - dosing/low-estradiol\n",
        f"  - dosing/low-estradiol\n  - {entry}\n",
    )
    assert any("is not a rule folder <category>/<rule-id>" in p for p in refused(mounted_rules))


def test_a_rule_set_without_a_manifest_is_refused(mounted_rules: Path) -> None:
    path = mounted_rules / "ruleset.yaml"
    text = path.read_text(encoding="utf-8")
    start, end = text.index("rules:\n"), text.index("classes: [")
    path.write_text(text[:start] + text[end:], encoding="utf-8")
    assert any("ruleset.yaml needs 'rules'" in p for p in refused(mounted_rules))


def test_a_class_file_the_manifest_does_not_name_is_refused(mounted_rules: Path) -> None:
    extra = mounted_rules / "classes/aromatase-inhibitor.yaml"
    shutil.copy(mounted_rules / "classes/anastrozole.yaml", extra)
    assert refused(mounted_rules) == [f"{extra}:1: class file not named in ruleset.yaml classes:"]


def test_a_named_class_file_that_is_missing_is_refused(mounted_rules: Path) -> None:
    (mounted_rules / "classes/bone-agent.yaml").unlink()
    assert any("classes/bone-agent.yaml:1: missing medication class" in p for p in refused(mounted_rules))


def test_a_rule_without_cases_in_a_set_that_carries_cases_is_refused(rules_copy: Path) -> None:
    shutil.rmtree(rules_copy / "monitoring/vitamin-d/cases")
    (problem,) = refused(rules_copy)
    assert problem.startswith(f"{rules_copy / 'monitoring/vitamin-d/cases'}:1: no scenario case")


def test_an_empty_cases_folder_is_refused(rules_copy: Path) -> None:
    for case in (rules_copy / "monitoring/vitamin-d/cases").iterdir():
        case.unlink()
    assert any("vitamin-d/cases:1: no scenario case" in p for p in refused(rules_copy))


def test_a_set_without_any_cases_loads(mounted_rules: Path) -> None:
    assert len(load_ruleset(mounted_rules).rules) == 9


def test_a_configmaps_hidden_folders_are_not_strays(tmp_path: Path, mounted_rules: Path) -> None:
    # The kubelet's layout: the files live in a timestamped folder, reached through ..data.
    volume = tmp_path / "volume"
    volume.mkdir()
    mounted_rules.rename(volume / "..2026_12_01_10_00_00.1")
    (volume / "..data").symlink_to("..2026_12_01_10_00_00.1")
    for entry in ("ruleset.yaml", "classes", "dosing", "monitoring", "treatment"):
        (volume / entry).symlink_to(f"..data/{entry}")
    assert len(load_ruleset(volume).rules) == 9
