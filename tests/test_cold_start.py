"""A CLI start loads only what the command needs (issue 16 item 9): checked by the modules a
fresh interpreter holds after the command, not by timing (timings are in
scripts/bench_startup.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve_fixtures import build_index

HEAVY = ("torch", "transformers", "scipy", "sklearn", "pandas", "faiss", "duckdb", "matplotlib", "soxr")

PROBE = """
import json, sys
from retrieval.cli import main
sys.argv = ["retrieve", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
print("MODULES " + json.dumps(sorted({m.split('.')[0] for m in sys.modules})))
"""


def loaded(args: list[str]) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("MODULES "))
    return set(json.loads(line[len("MODULES "):]))


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_index(tmp_path_factory.mktemp("cold"))[1]


def test_help_loads_nothing_heavy() -> None:
    assert not loaded(["--help"]) & set(HEAVY)
    assert not loaded(["query", "--help"]) & set(HEAVY)


def test_info_opens_duckdb_and_faiss_only(index: Path) -> None:
    (index / "info.json").unlink(missing_ok=True)  # no summary: info opens the index
    mods = loaded(["info", "--index", str(index)])
    assert "duckdb" in mods  # it did read the index
    assert not mods & {"torch", "transformers", "scipy", "sklearn", "pandas", "pyarrow", "matplotlib", "soxr"}


def test_info_from_a_current_summary_loads_no_numpy(index: Path) -> None:
    loaded(["info", "--index", str(index)])  # records the summary if the fixture's writer did not
    assert (index / "info.json").is_file()
    mods = loaded(["info", "--index", str(index)])
    assert not mods & {"numpy", *HEAVY}


def test_logmel_query_loads_no_model_library(index: Path, tmp_path: Path) -> None:
    clip = next((index.parent / "corpus").rglob("*.wav"))
    mods = loaded(["query", str(clip), "--index", str(index), "-k", "3"])
    assert "faiss" in mods and "soundfile" in mods  # it did read the clip and search
    assert not mods & {"torch", "transformers", "sklearn", "matplotlib", "pandas", "pyarrow", "scipy"}


def test_logmel_query_imports_no_scipy(index: Path) -> None:
    """The spectral baseline is numpy alone (retrieval.encoders.dsp): no scipy module at all."""
    clip = next((index.parent / "corpus").rglob("*.wav"))
    assert "scipy" not in loaded(["query", str(clip), "--index", str(index)])
