"""Rule-set fixtures: copies of the packaged rules that a test may edit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.settings import PACKAGED_RULES_DIR


def copy_rules(target: Path, *, cases: bool = True) -> Path:
    """A copy of the packaged rule set at ``target``; without ``cases`` as the chart mounts it."""
    ignore = None if cases else shutil.ignore_patterns("cases")
    shutil.copytree(PACKAGED_RULES_DIR, target, ignore=ignore)
    return target


@pytest.fixture
def rules_copy(tmp_path: Path) -> Path:
    """The packaged rule set with its scenario cases, in a temporary folder."""
    return copy_rules(tmp_path / "rules")


@pytest.fixture
def mounted_rules(tmp_path: Path) -> Path:
    """The packaged rule set without its scenario cases, as the Helm chart mounts it."""
    return copy_rules(tmp_path / "rules", cases=False)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
