"""The dev extra carries the tools the README and CONTRIBUTING steps use."""

import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_dev_extra_runs_notebooks_the_usual_way():
    """`pip install -e .[dev]` brings `jupyter` and `jupyter nbconvert --execute`, not only nbclient."""
    dev = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["dev"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in dev}
    assert {"jupyter", "nbconvert", "ipykernel"} <= names
