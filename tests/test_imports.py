"""No import cycles inside ``msearch/``.

Why: a module that imports one that imports it back (even inside a
function, even only for type checking) cannot be understood, tested or
moved without the other; such a circle grew around the old store.py
(store, segment, lexical, coarse and int8). The graph is read from the
source with ``ast``: every ``import`` and ``from ... import`` anywhere in
a module (top level, inside functions, under ``TYPE_CHECKING``) is an
arrow to the module it names, or, for ``from package import name``, to the
submodule ``name`` where there is one. Importing ``a.b`` also runs
``a/__init__.py``; that implicit step is not an arrow (every package's
face would otherwise sit on a circle with its own modules).
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO


def module_names(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``package``."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """``name``, or the nearest package above it that is a module here."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (anywhere in it)."""
    modules = module_names(package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's own package up
                    base_parts = name.split(".")
                    drop = node.level - 1 if is_package else node.level
                    base_parts = base_parts[: len(base_parts) - drop]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                found = _known(target, modules)
                if found is not None and found != name:
                    graph[name].add(found)
                elif found == name and target == name:
                    graph[name].add(name)  # a module importing itself
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The circles of ``graph``: its strongly connected components of more
    than one module, and modules that import themselves (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_inside_msearch() -> None:
    graph = import_graph(REPO / "msearch")
    assert len(graph) > 30  # the whole package was read
    circles = cycles(graph)
    detail = [
        " -> ".join(c) + ": " + "; ".join(f"{a} imports {sorted(graph[a] & set(c))}" for a in c)
        for c in circles
    ]
    assert not circles, "\n".join(detail)


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_the_check_sees_cycles_through_functions_type_checking_and_packages(
    tmp_path: Path,
) -> None:
    """The checker itself, on a made-up package: a circle closed only inside
    a function, one closed only under TYPE_CHECKING, one through ``from
    package import submodule`` and relative imports, and arrows that make
    no circle (a package's face, a module beside another)."""
    pkg = tmp_path / "pkg"
    write(pkg, "__init__.py", "from pkg.a import thing\n")
    write(pkg, "a.py", "import pkg.b\nthing = 1\n")
    write(pkg, "b.py", "def f():\n    from pkg import a\n    return a\n")
    write(
        pkg,
        "c.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.d import D\n",
    )
    write(pkg, "d.py", "from . import c\nclass D: ...\n")
    write(pkg, "sub/__init__.py", "")
    write(pkg, "sub/e.py", "from .. import f\n")
    write(pkg, "f.py", "from pkg.sub import e\n")
    write(pkg, "g.py", "import pkg.a\nfrom pkg import sub\n")
    graph = import_graph(pkg)
    assert graph["pkg"] == {"pkg.a"} and graph["pkg.sub.e"] == {"pkg.f"}
    assert cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"], ["pkg.f", "pkg.sub.e"]]
    write(pkg, "b.py", "x = 1\n")
    write(pkg, "d.py", "class D: ...\n")
    write(pkg, "f.py", "import os\n")
    assert cycles(import_graph(pkg)) == []
