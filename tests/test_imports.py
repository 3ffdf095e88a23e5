"""The package's import graph is the one its docstring describes, with no private names crossing
modules."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import effnet_tutorial

PACKAGE = Path(effnet_tutorial.__file__).parent


def unit(module: str) -> str:
    """``data.coco`` -> ``data``: subpackages are listed as one unit."""
    return module.split(".")[0]


def relative_imports(path: Path) -> list[tuple[str, str]]:
    """``(imported module, imported name)`` for every relative import in a file, lazy ones too."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    package = parts if path.name == "__init__.py" else parts[:-1]
    package = [p for p in package if p != "__init__"]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            for alias in node.names:
                target = base + ([node.module] if node.module else [alias.name])
                found.append((".".join(target), alias.name))
    return found


def documented_order() -> list[str]:
    doc = effnet_tutorial.__doc__
    listing = doc[doc.index("Modules, listed"):]
    return re.findall(r"``(\w+)``", listing)


def test_docstring_lists_every_module_once():
    order = documented_order()
    assert len(order) == len(set(order))
    units = {unit(".".join(p.relative_to(PACKAGE).with_suffix("").parts))
             for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    units |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert set(order) == units


def test_each_module_imports_only_modules_listed_before_it():
    order = {name: i for i, name in enumerate(documented_order())}
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent == PACKAGE and path.name in ("__init__.py", "__main__.py"):
            continue
        me = unit(".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        for target, _ in relative_imports(path):
            other = unit(target) if target else me
            if other != me and other in order and order[other] > order[me]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert not wrong, wrong


def test_no_private_name_crosses_a_module_boundary():
    crossing = []
    for path in PACKAGE.rglob("*.py"):
        me = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for target, name in relative_imports(path):
            if name.startswith("_") and name != "__version__" and target != me:
                crossing.append(f"{me} imports {target}.{name}")
    assert not crossing, crossing
