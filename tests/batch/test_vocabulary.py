"""The one vocabulary: every status word the package compares is defined in :mod:`~airflow_openrouter.batch.vocabulary`."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

import airflow_openrouter
from airflow_openrouter.batch import vocabulary

PACKAGE = Path(airflow_openrouter.__file__).parent
WORDS = {
    word
    for alias in (
        vocabulary.SnapshotStatus,
        vocabulary.EventStatus,
        vocabulary.RowStatus,
        vocabulary.ManifestStatus,
    )
    for member in get_args(alias)
    for word in (get_args(member) or (member,))
}


def _is_status(node: ast.expr) -> bool:
    """``x["status"]``, ``x.get("status")``, ``x.status`` or a name ending in ``status``."""
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "status"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value == "status"
    if isinstance(node, ast.Attribute):
        return node.attr == "status" or node.attr.endswith("_status")
    return isinstance(node, ast.Name) and (node.id == "status" or node.id.endswith("_status"))


def _words(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def compared_status_words() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        # The emulator speaks the wire's words, the common-ai adapter common-ai's (its "errored").
        if {"testing", "integrations"} & set(path.relative_to(PACKAGE).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            if any(_is_status(side) for side in sides):
                for side in sides:
                    found += [(str(path.relative_to(PACKAGE)), node.lineno, w) for w in _words(side)]
    return found


def test_every_status_word_compared_in_the_package_comes_from_the_vocabulary():
    found = compared_status_words()

    assert len(found) > 20  # the scan sees the comparisons (the engines, the watch, the results)
    assert [f for f in found if f[2] not in WORDS] == []
