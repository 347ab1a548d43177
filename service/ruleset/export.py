"""``osteoguard rules export-chart``: the Helm chart's copy of the rule set, made from rules/.

The chart ships the rule set as a ConfigMap built from ``helm/osteoguard/files/rules``
(Helm can read files only inside the chart). That copy is generated, never edited: this
writes ``ruleset.yaml``, every ``classes/<class>.yaml`` and every ``<category>/<rule-id>/rule.yaml``
(no scenario cases: they are test data) and removes files that no longer exist in rules/. A
deploy test fails when the copy differs from rules/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from service.ruleset.classes import class_files
from service.ruleset.loader import rule_files


def deployed_files(root: Path) -> dict[str, bytes]:
    """The files of the rule set a deployment needs, by path relative to ``root``."""
    paths = [root / "ruleset.yaml", *class_files(root), *rule_files(root)]
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in paths}


def export(rules_dir: Path, target: Path) -> list[str]:
    """Make ``target`` an exact copy of the deployed files of ``rules_dir``; returns what changed."""
    wanted = deployed_files(rules_dir)
    changed = []
    existing = (
        {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()}
        if target.exists()
        else set()
    )
    for rel in sorted(existing - set(wanted)):
        (target / rel).unlink()
        changed.append(f"removed {rel}")
    for rel, content in sorted(wanted.items()):
        path = target / rel
        if path.is_file() and path.read_bytes() == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        changed.append(f"wrote {rel}")
    for folder in sorted((p for p in target.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            shutil.rmtree(folder)
    return changed
