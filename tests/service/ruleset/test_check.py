"""``osteoguard rules check`` refuses exactly what a reload refuses, with the same messages."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest

from service.cli import main
from service.engine.adapter import RuleEngine
from service.pipeline.registry import Registry
from service.ruleset.check import assess
from service.ruleset.loader import load_ruleset
from service.ruleset.reload import RuleReloader
from service.settings import PACKAGED_RULES_DIR
from tests.service.ruleset.conftest import copy_rules, edit


def rules_check(rules_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["rules", "check", str(rules_dir)])
    err = capsys.readouterr().err.splitlines()
    return code, err[:-1] if code else err  # the last line counts the problems


def reload_problems(rules_dir: Path, caplog: pytest.LogCaptureFixture, change: object) -> list[str]:
    """The problems a reloader logs when ``change`` (a callable) is applied to ``rules_dir``."""

    async def run() -> bool:
        ruleset = load_ruleset(rules_dir)
        engine = RuleEngine(ruleset)
        try:
            reloader = RuleReloader(Registry(ruleset, engine), rules_dir, 0)
            change()  # type: ignore[operator]
            return await reloader.check_once()
        finally:
            engine.close()

    with caplog.at_level(logging.ERROR, logger="osteoguard.rules"):
        assert asyncio.run(run()) is False
    (record,) = [r for r in caplog.records if r.name == "osteoguard.rules"]
    return list(record.problems)  # type: ignore[attr-defined]


def cut_baseline_dexa(rules_dir: Path) -> None:
    path = rules_dir / "monitoring/baseline-dexa/rule.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: text.index("  stale:\n")], encoding="utf-8")


def test_the_packaged_set_passes_with_its_cases(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(PACKAGED_RULES_DIR)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("rule set anastrozole-bone ") and "9 rules OK, 156 scenario cases pass" in out


def test_a_set_without_its_cases_is_judged_on_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rules", "check", str(copy_rules(tmp_path / "rules", cases=False))]) == 0
    assert "no scenario cases here to run" in capsys.readouterr().out


def test_a_rule_file_cut_short_is_refused(rules_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cut_baseline_dexa(rules_copy)
    code, problems = rules_check(rules_copy, capsys)
    assert code == 1 and len(problems) == 1 and "does not end with the line '...'" in problems[0]


def test_a_set_whose_cases_fail_is_refused(rules_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(rules_copy / "dosing/low-estradiol/rule.yaml", "e2_low_pg_ml: 10 ", "e2_low_pg_ml: 5 ")
    code, problems = rules_check(rules_copy, capsys)
    case = rules_copy / "dosing/low-estradiol/cases/boundary-e2-9.99-fires.yaml"
    assert code == 1 and f"{case}:1: expected low-estradiol to fire" in problems


@pytest.mark.parametrize(
    "change",
    [
        cut_baseline_dexa,
        lambda root: shutil.rmtree(root / "dosing/low-estradiol"),
        lambda root: shutil.copytree(root / "monitoring/vitamin-d", root / "monitoring/vitamin-d-2"),
        lambda root: shutil.rmtree(root / "monitoring/vitamin-d/cases"),
        lambda root: edit(root / "monitoring/vitamin-d/rule.yaml", "indicator: info", "indicator: loud"),
    ],
    ids=["cut-short", "deleted-folder", "stray-folder", "no-cases", "bad-value"],
)
def test_rules_check_and_reload_refuse_with_the_same_messages(
    rules_copy: Path,
    change: object,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    logged = reload_problems(rules_copy, caplog, lambda: change(rules_copy))  # type: ignore[operator]
    code, printed = rules_check(rules_copy, capsys)
    assert code == 1 and printed == logged and logged


def test_assess_hands_over_a_compiled_engine_only_when_acceptable(rules_copy: Path) -> None:
    good = assess(rules_copy)
    assert good.ok and good.engine is not None and good.cases == 156
    good.engine.close()
    edit(rules_copy / "dosing/low-estradiol/rule.yaml", "e2_low_pg_ml: 10 ", "e2_low_pg_ml: 5 ")
    bad = assess(rules_copy)
    assert not bad.ok and bad.engine is None and bad.ruleset is not None
