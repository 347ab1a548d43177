"""The rule set's manifest: ``rules:`` and ``classes:`` in ruleset.yaml, checked against the disk.

``rules:`` names every rule by its folder (``<category>/<rule-id>``), ``classes:`` every
medication class file (``classes/<class>.yaml``, by class id). A set is loaded whole or not at
all, so the loader refuses, each as ``path:line: reason``:

* a name given twice, or one that is not a ``<category>/<rule-id>`` (a class id) at all;
* a named rule folder, its ``rule.yaml`` or a named class file that is missing;
* a rule folder or class file on disk that the manifest does not name (a stray or half-copied
  folder must not go live because it appeared);
* scenario cases on some rules but not others: a set carries its cases (the repository, the
  image) or none of them (the chart's ConfigMap, which leaves test data out), and where it
  carries them every rule has at least one (they gate a reload, :mod:`service.ruleset.check`).

Names starting with ``.`` are not looked at: the kubelet keeps a ConfigMap's files in
``..data`` and timestamped ``..<date>`` folders behind symlinks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.ruleset.classes import CLASS_DIR
from service.ruleset.model import RULE_ID
from service.ruleset.yamlfile import Problems

CASE_DIR = "cases"
_FOLDER = re.compile(r"^([a-z][a-z0-9]*(?:-[a-z0-9]+)*)/([a-z][a-z0-9]*(?:-[a-z0-9]+)*)$")


@dataclass(frozen=True)
class Manifest:
    rules: tuple[str, ...]  # "<category>/<rule-id>", in path order (the order rules are read)
    classes: tuple[str, ...]  # class ids, in order

    def rule_files(self, root: Path) -> list[Path]:
        return [root / folder / "rule.yaml" for folder in self.rules]

    def class_files(self, root: Path) -> list[Path]:
        return [root / CLASS_DIR / f"{cls}.yaml" for cls in self.classes]


def _names(
    head: dict[str, Any], key: str, problems: Problems, valid: re.Pattern[str], shape: str
) -> list[str]:
    raw = head.get(key)
    if not isinstance(raw, list) or not raw:
        problems.add((key,) if key in head else (), f"ruleset.yaml needs {key!r}: a list of {shape}")
        return []
    names: list[str] = []
    for i, item in enumerate(raw):
        match = valid.match(item) if isinstance(item, str) else None
        if match is None or (key == "rules" and match.group(1) == CLASS_DIR):
            problems.add((key, i), f"{key} entry {item!r} is not {shape}")
        elif item in names:
            problems.add((key, i), f"{key} names {item!r} twice")
        else:
            names.append(item)
    return names


def read_manifest(head: dict[str, Any], problems: Problems) -> Manifest:
    """The manifest of an already read ruleset.yaml (``problems`` is still on that file)."""
    rules = _names(head, "rules", problems, _FOLDER, "a rule folder <category>/<rule-id>")
    classes = _names(head, "classes", problems, RULE_ID, "a class id (classes/<id>.yaml)")
    # Rules are read (and their cards ordered) by path, as before there was a manifest.
    return Manifest(tuple(sorted(rules, key=lambda name: tuple(name.split("/")))), tuple(classes))


def _visible_dirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())
    except OSError:
        return []


def layout_problems(root: Path, manifest: Manifest) -> list[str]:
    """What on disk does not match the manifest (empty when the folder is exactly the set)."""
    problems: list[str] = []
    named = set(manifest.rules)
    head = root / "ruleset.yaml"
    for folder in manifest.rules:
        path = root / folder
        if not path.is_dir():
            problems.append(f"{path}:1: rule folder named in {head.name} rules: is missing")
        elif not (path / "rule.yaml").is_file():
            problems.append(f"{path / 'rule.yaml'}:1: missing: the rule folder has no rule.yaml")
    for category in _visible_dirs(root):
        if category.name == CLASS_DIR:
            continue
        for found in _visible_dirs(category):
            if f"{category.name}/{found.name}" not in named:
                problems.append(
                    f"{found}:1: rule folder not named in {head.name} rules: "
                    "(name it there to load it, or remove the folder)"
                )
    for path in manifest.class_files(root):
        if not path.is_file():
            problems.append(f"{path}:1: missing medication class (named in {head.name} classes:)")
    class_dir = root / CLASS_DIR
    if class_dir.is_dir():
        for path in sorted(class_dir.iterdir()):
            if not path.name.startswith(".") and path.stem not in manifest.classes:
                problems.append(f"{path}:1: class file not named in {head.name} classes:")
    if carries_cases(root, manifest):
        for folder in manifest.rules:
            if not any((root / folder / CASE_DIR).glob("*.yaml")):
                problems.append(
                    f"{root / folder / CASE_DIR}:1: no scenario case (a rule set that carries cases "
                    "needs at least one per rule)"
                )
    return problems


def carries_cases(root: Path, manifest: Manifest) -> bool:
    """True when the set carries its scenario cases (then every rule has some)."""
    return any((root / folder / CASE_DIR).is_dir() for folder in manifest.rules)
