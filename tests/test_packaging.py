"""Every third-party package the library imports is a declared runtime dependency, so a plain
`pip install .` (the README's main job) has all it needs."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# import name -> distribution name, where they differ
DIST_OF = {"sklearn": "scikit-learn"}
# imported lazily behind an option, declared as an extra
OPTIONAL = {"ray": "ray"}


def _third_party_imports() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "python" / "singledir").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "singledir"}


def test_runtime_imports_are_declared_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        d.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
        for d in project["dependencies"]
    }
    extras = {
        d.split(">")[0].split("=")[0].strip().lower()
        for group in project["optional-dependencies"].values()
        for d in group
    }
    imports = _third_party_imports()
    assert "torch" in imports and "sklearn" in imports  # the scan itself works
    for name in sorted(imports):
        dist = DIST_OF.get(name, name).lower()
        if name in OPTIONAL:
            assert OPTIONAL[name] in extras, f"{name} is imported but in no extra"
        else:
            assert dist in declared, f"{name} is imported but {dist} is not a dependency"
