"""The dev extra carries the tools the README and CONTRIBUTING steps use."""

import ast
import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_dev_extra_runs_notebooks_the_usual_way():
    """`pip install -e .[dev]` brings `jupyter` and `jupyter nbconvert --execute`, not only nbclient."""
    dev = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["dev"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in dev}
    assert {"jupyter", "nbconvert", "ipykernel"} <= names


#: Import names whose distribution is named otherwise.
DISTRIBUTION = {"sklearn": "scikit-learn", "faiss": "faiss-cpu", "PIL": "pillow", "umap": "umap-learn",
                "laion_clap": "laion-clap"}


def _requirement_name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_every_package_the_library_imports_is_declared():
    """A module under retrieval/ imports only what `pip install retrieve[...]` brings: the
    dependencies or a run-time extra, never only the dev extra (tests, notebooks)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    extras = {k: v for k, v in project["optional-dependencies"].items() if k != "dev"}
    declared = {_requirement_name(r) for r in project["dependencies"] + [r for v in extras.values() for r in v]}
    imported: set[str] = set()
    for path in (PYPROJECT.parent / "retrieval").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"retrieval"}
    missing = {m for m in third_party if DISTRIBUTION.get(m, m).lower().replace("_", "-") not in declared}
    assert not missing, f"imported by retrieval/ but not declared in pyproject.toml: {sorted(missing)}"
    encoders = {m for path in (PYPROJECT.parent / "retrieval" / "encoders").rglob("*.py")
                for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, (ast.Import, ast.ImportFrom))
                for m in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])}
    assert not any(m.split(".")[0] == "scipy" for m in encoders)  # the spectral baseline is numpy-only (dsp.py)
