"""The downloader and the store as modules: one idea each, no import circle, none too long.

Read from the source (every import, at the top of a file or inside a function), so that a lazy
import that closes a circle counts as much as one at the top.
"""

from __future__ import annotations

import ast

import pytest

from .conftest import REPO

PACKAGE = REPO / "ddrm_helpers"
# The store, the three modules of the downloader, its public names, and the status table
STORE_SIDE = ("store", "status", "download", "fetch_policy", "http_protocol", "http_deadline", "part_writer",
              "verify", "safefs", "torch_zip", "registry")


def imports_of(module: str) -> set[str]:
    """The ddrm_helpers modules that ``module`` imports anywhere in its file."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("ddrm_helpers."):
            found.add(node.module.split(".")[1])
    return {name for name in found if (PACKAGE / f"{name}.py").exists()}


def test_no_import_circle_between_the_store_the_downloader_and_the_status_table():
    modules = [p.stem for p in PACKAGE.glob("*.py")]
    graph = {m: imports_of(m) for m in modules}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), list(graph[start])
        while todo:
            here = todo.pop()
            if here == goal:
                return True
            if here not in seen:
                seen.add(here)
                todo.extend(graph.get(here, ()))
        return False

    circles = [m for m in STORE_SIDE if reaches(m, m)]
    assert circles == []


@pytest.mark.parametrize("module", STORE_SIDE)
def test_no_module_of_the_store_side_is_over_400_lines(module):
    assert len((PACKAGE / f"{module}.py").read_text().splitlines()) <= 400


def test_the_downloader_is_three_modules_and_download_py_only_names_them():
    text = (PACKAGE / "download.py").read_text()
    assert len(text.splitlines()) <= 100
    tree = ast.parse(text)
    assert not [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert imports_of("fetch_policy") >= {"http_protocol", "part_writer"}
    assert "fetch_policy" not in imports_of("http_protocol") | imports_of("part_writer")
