"""The mapped search-vector copy (retrieval.store.vector_file) gives exactly the vectors DuckDB
plus the fitted post-processing give, and is rebuilt or patched whenever it is not current."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from retrieval.cli import cli
from retrieval.store import Store
from retrieval.store import vector_file
from tests.serve_fixtures import build_index


@pytest.fixture()
def built(tmp_path: Path) -> tuple[Path, Path]:
    return build_index(tmp_path)


def _truth(store: Store) -> tuple[np.ndarray, np.ndarray]:
    ids, raw = store.db.vectors("window", store.require_recipe().dim)
    return ids, store.postprocess.apply(raw)


def _check(ix: Path) -> np.ndarray:
    with Store.open(ix, writable=True) as store:
        ids, vecs = vector_file.search_vectors(store)
        want_ids, want = _truth(store)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(vecs, want, atol=1e-6)
    return np.asarray(vecs)


def test_the_copy_equals_duckdb_and_is_mapped_on_the_next_open(built: tuple[Path, Path]) -> None:
    _, ix = built
    assert not vector_file.exists(ix, "window")
    _check(ix)
    assert vector_file.exists(ix, "window")
    with Store.open(ix, writable=True) as store:
        _, vecs = vector_file.search_vectors(store)
        assert isinstance(vecs, np.memmap)  # mapped, not recomputed


def test_a_damaged_copy_is_rebuilt(built: tuple[Path, Path]) -> None:
    _, ix = built
    _check(ix)
    meta = json.loads(vector_file.meta_path(ix, "window").read_text())
    path = ix / meta["vectors"]
    data = bytearray(path.read_bytes())
    data[-8:] = b"\x00" * 8
    path.write_bytes(bytes(data))
    with Store.open(ix) as store:
        assert vector_file.load(ix, "window", store.fit_digest()) is None
    _check(ix)


def test_a_copy_of_an_older_generation_is_patched_to_equal_a_rebuild(built: tuple[Path, Path]) -> None:
    corpus, ix = built
    _check(ix)
    extra = next(corpus.rglob("*.wav"))
    shutil.copy(extra, extra.with_name("added_copy.wav"))
    next(p for p in corpus.rglob("*.wav") if p != extra and p.name != "added_copy.wav").unlink()
    res = CliRunner().invoke(cli, ["index", str(corpus), "--index", str(ix)])
    assert res.exit_code == 0, res.output
    _check(ix)
    names = {p.name for p in ix.glob("windows.search.*")}
    meta = json.loads(vector_file.meta_path(ix, "window").read_text())
    assert names == {"windows.search.json", meta["vectors"], meta["ids"]}  # older copies removed
