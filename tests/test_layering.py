"""The package's layering, read from its source (AST, nothing imported).

(a) No import cycle among ``retrieval`` modules through module-level imports (those not
inside a function), ``if TYPE_CHECKING:`` blocks included: a cycle there is a circle in
the design even when Python happens to resolve it. Importing ``a.b.c`` also runs the
packages ``a`` and ``a.b``, so those count as imported too.

(b) No module outside ``retrieval/store/`` imports duckdb or touches a connection
(``.con``): every query belongs to :class:`retrieval.store.db.MetadataDB` or another
class of ``retrieval/store/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "retrieval"


def _module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _top_level_nodes(tree: ast.Module) -> list[ast.stmt]:
    """Statements that run when the module is imported: the module body, into if/try/with
    blocks, but not into function or class bodies' functions."""
    out: list[ast.stmt] = []
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for name in ("body", "orelse", "finalbody", "handlers"):
            todo.extend(s for s in getattr(node, name, []) if isinstance(s, (ast.stmt, ast.ExceptHandler)))
    return out


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Modules of ``known`` that ``module`` imports at module level, with their parent packages."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in _top_level_nodes(tree):
        if isinstance(node, ast.ExceptHandler):
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import submodule`
    out: set[str] = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            prefix = ".".join(parts[:i])
            if prefix in known and prefix != module and not module.startswith(prefix + "."):
                out.add(prefix)
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """``module -> modules it imports at module level`` over the package under ``root``."""
    modules = _modules(root)
    known = set(modules)
    return {m: _imports(m, p, known) for m, p in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def database_uses(path: Path) -> list[str]:
    """``line: what`` for each duckdb import or ``.con`` attribute in one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "duckdb" for a in node.names):
            found.append(f"{node.lineno}: import duckdb")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "duckdb":
            found.append(f"{node.lineno}: from duckdb import")
        elif isinstance(node, ast.Attribute) and node.attr == "con":
            found.append(f"{node.lineno}: .con")
    return found


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_database_access_outside_store():
    outside = {str(p.relative_to(PACKAGE.parent)): uses for p in sorted(PACKAGE.rglob("*.py"))
               if "store" not in p.relative_to(PACKAGE).parts[:1] and (uses := database_uses(p))}
    assert not outside, f"SQL belongs in retrieval/store/ (MetadataDB); found: {outside}"


# -- the checks themselves can fail ------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "retrieval"


def test_cycle_check_sees_a_type_checking_circle(tmp_path):
    pkg = _write(tmp_path, {
        "retrieval/__init__.py": "",
        "retrieval/index.py": "def locate():\n    from retrieval.locate import api\n",
        "retrieval/locate/__init__.py": "from retrieval.locate.api import locate\n",
        "retrieval/locate/api.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                   "    from retrieval.index import Index\ndef locate(): ...\n",
        "retrieval/search.py": "from . import index\n",
    })
    graph = import_graph(pkg)
    assert graph["retrieval.locate.api"] == {"retrieval.index"}  # its own packages are not edges
    assert graph["retrieval.search"] == {"retrieval.index"}  # relative import resolved
    assert find_cycle(graph) is None  # index imports locate only inside a function
    (pkg / "index.py").write_text("from retrieval.locate import api\n")
    cycle = find_cycle(import_graph(pkg))
    assert cycle is not None and {"retrieval.index", "retrieval.locate.api"} <= set(cycle)


def test_database_check_sees_a_connection(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import duckdb\n\ndef f(store):\n    return store.db.con.execute('SELECT 1')\n")
    assert database_uses(path) == ["1: import duckdb", "4: .con"]
    path.write_text("def f(store):\n    return store.db.vectors('file', 8)\n")
    assert database_uses(path) == []


@pytest.mark.parametrize("module", ["retrieval.index", "retrieval.locate.api", "retrieval.search"])
def test_the_graph_sees_the_real_modules(module):
    assert module in import_graph()
