"""Reading one rule-set file as YAML, and reporting its problems as ``file:line: message``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class Problems:
    """Collects ``file:line: message`` problems while a file is checked."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._file: Path | None = None
        self._root: yaml.Node | None = None

    def start(self, path: Path, root: yaml.Node | None) -> None:
        self._file, self._root = path, root

    def add(self, where: tuple[Any, ...], message: str) -> None:
        line = line_of(self._root, where)
        self.items.append(f"{self._file}:{line}: {message}")


def line_of(node: yaml.Node | None, path: tuple[Any, ...]) -> int:
    """1-based line of the YAML node at ``path`` (or its nearest existing ancestor)."""
    if node is None:
        return 1
    line = node.start_mark.line + 1
    for step in path:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == step:
                    child = value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            if 0 <= step < len(node.value):
                child = node.value[step]
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


# libyaml when PyYAML has it: the medication class files are ~100 kB, which the pure-Python
# parser takes most of a second to read.
LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def cut_short(text: str) -> bool:
    """A file that does not end with a line break: every editor and generator writes one last,
    so this is a file cut off mid-line (a partial write, a full disk) even when it parses."""
    return bool(text) and not text.endswith("\n")


# The last line of every hand-edited rule-set file (ruleset.yaml, each rule.yaml): YAML's own
# document end marker. A file cut short anywhere, even at a line break and still parsing, lacks it.
END_MARKER = "..."


def ends_unmarked(text: str) -> bool:
    """The text's last line is not the document end marker."""
    return text.rstrip("\n").rpartition("\n")[2].strip() != END_MARKER


def read_yaml(path: Path, problems: Problems, *, end_marker: bool = False) -> Any:
    """A file's YAML data; its node tree is kept in ``problems`` for line numbers (one parse).

    ``end_marker``: the file must end with the line ``...`` (:data:`END_MARKER`).
    """
    try:
        text = path.read_text(encoding="utf-8")
        line = text.rstrip("\n").count("\n") + 1  # the last line
        if cut_short(text):
            problems.start(path, None)
            problems.items.append(f"{path}:{line}: the file does not end with a line break (cut short?)")
            return None
        loader = LOADER(text)
        try:
            root = loader.get_single_node()
            problems.start(path, root)
            if end_marker and ends_unmarked(text):
                problems.items.append(
                    f"{path}:{line}: the file does not end with the line {END_MARKER!r} (YAML's "
                    "document end): cut short, or still being written?"
                )
                return None
            return loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else 1
        problems.items.append(f"{path}:{line}: invalid YAML: {exc.problem}")
    except UnicodeDecodeError as exc:
        problems.items.append(f"{path}:1: not UTF-8 text: {exc.reason}")
    except OSError as exc:
        problems.items.append(f"{path}:1: cannot read: {exc.strerror}")
    return None
