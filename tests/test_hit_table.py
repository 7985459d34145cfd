"""The serving path (`retrieval.hit_table`, `Index.search_*_rows`) answers exactly what the DataFrame path did."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from retrieval.hit_table import QUERY_CACHE_SIZE, hit_table
from retrieval.index import Index
from retrieval.render import clean_record
from tests.test_search_rows import built  # noqa: F401 - the fixture: two roots, NULLs in an integer column

WHERES = (None, "take >= 3", "site = 'south' OR label = 'noise'", "take > 99")


def _frame_rows(hits) -> list[dict]:
    return [clean_record(r) for r in hits.to_dict(orient="records")]


def _old_body(hits) -> bytes:
    """The body `/api/search` sent before the serving path: records through a JSON round trip, then JSONResponse."""
    fastapi = pytest.importorskip("fastapi")
    from retrieval.serve.app import records

    return fastapi.responses.JSONResponse(records(hits.to_dict(orient="records"))).body


@pytest.mark.parametrize("windows", [False, True])
def test_rows_by_vector_equal_the_dataframe(built: tuple[Path, Path], windows: bool) -> None:  # noqa: F811
    ix, corpus = built
    with Index.open(ix) as idx:
        for clip, where, k in itertools.product(
                (corpus / "tone" / "tone_01.wav", corpus / "chirp" / "chirp_00.wav"), WHERES, (1, 4, 500)):
            vector = idx.embed(clip)
            frame = idx.search_vector(vector, k, windows=windows, where=where)
            rows = idx.search_vector_rows(vector, k, windows=windows, where=where)
            assert rows == _frame_rows(frame)
            if rows:
                assert list(rows[0]) == list(frame.columns)


@pytest.mark.parametrize("windows", [False, True])
def test_rows_of_an_indexed_file_or_window_equal_the_old_path(built: tuple[Path, Path],  # noqa: F811
                                                              windows: bool) -> None:
    ix, _ = built
    with Index.open(ix) as idx:
        window_table, _ = idx.store.hit_tables()
        files = idx.files()
        file_ids = files["file_id"].iloc[:: max(1, len(files) // 6)].tolist()  # both roots, NULL and set takes
        file_ids += files.loc[files["take"].notna(), "file_id"].tolist()
        some_windows = window_table.index.to_numpy()[:: max(1, len(window_table) // 5)].tolist()
        asked = [{"file_id": f} for f in file_ids] + [{"window_id": s} for s in some_windows]
        n = 0
        for ask, where, k, include_self in itertools.product(asked, WHERES, (1, 500), (False, True)):
            try:
                frame = idx.search_indexed(k, windows=windows, where=where, include_self=include_self, **ask)
            except Exception as exc:  # a file-level row is no window: both paths refuse it alike
                with pytest.raises(type(exc)):
                    idx.search_indexed_rows(k, windows=windows, where=where, include_self=include_self, **ask)
                continue
            rows = idx.search_indexed_rows(k, windows=windows, where=where, include_self=include_self, **ask)
            assert rows == _frame_rows(frame), (ask, where, k, include_self)
            n += bool(rows)
        assert n > len(asked)  # most asks found hits, so the equality above was not vacuous


def test_the_json_body_is_byte_for_byte_the_old_one(built: tuple[Path, Path]) -> None:  # noqa: F811
    pytest.importorskip("fastapi")
    from retrieval.serve.app import json_bytes

    ix, _ = built
    with Index.open(ix) as idx:
        for fid in idx.files()["file_id"].tolist()[:6]:
            for windows in (False, True):
                frame = idx.search_indexed(8, file_id=fid, windows=windows)
                rows = idx.search_indexed_rows(8, file_id=fid, windows=windows)
                assert json_bytes(rows) == _old_body(frame)
                assert json.loads(json_bytes(rows)) == rows


def test_an_unknown_id_is_refused_like_the_old_path(built: tuple[Path, Path]) -> None:  # noqa: F811
    ix, _ = built
    with Index.open(ix) as idx:
        unknown = int(idx.files()["file_id"].max()) + 1000
        with pytest.raises(Exception) as old:
            idx.search_indexed(3, file_id=unknown)
        with pytest.raises(type(old.value)):
            idx.search_indexed_rows(3, file_id=unknown)
        with pytest.raises(KeyError):
            hit_table(idx.store).rows(np.array([10**9]), np.array([0.5]))


def test_query_vectors_are_read_once_per_version(built: tuple[Path, Path],  # noqa: F811
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ix, _ = built
    with Index.open(ix) as idx:
        reads = []
        real = idx.store.db.file_vector_rows
        monkeypatch.setattr(idx.store.db, "file_vector_rows", lambda **kw: reads.append(kw) or real(**kw))
        a, b = idx.files()["file_id"].tolist()[:2]
        idx.search_indexed_rows(4, file_id=a)
        idx.search_indexed_rows(4, file_id=b, windows=True)
        assert reads == []  # file vectors are held in memory: DuckDB is not asked
        win = int(hit_table(idx.store).window_ids[0])
        first = idx.search_indexed_rows(4, window_id=win)
        assert idx.search_indexed_rows(4, window_id=win) == first
        idx.search_indexed_rows(4, window_id=win, windows=True)
        assert len(reads) == 1  # a window's vector is read once, then kept
        generation = idx.store.db.get("generation")
        monkeypatch.setattr(idx.store.db, "get", lambda key, real_get=idx.store.db.get:
                            f"{generation}-next" if key == "generation" else real_get(key))
        idx.search_indexed_rows(4, window_id=win)  # another generation: read again
        assert len(reads) == 2
    assert QUERY_CACHE_SIZE > 0


def test_over_the_memory_limit_file_vectors_come_from_duckdb_alike(built: tuple[Path, Path],  # noqa: F811
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import retrieval.hit_table as ht

    ix, _ = built
    monkeypatch.setattr(ht, "FILE_QUERIES_MAX_BYTES", 0)
    with Index.open(ix) as idx:
        assert ht.file_queries(idx.store) is None
        reads = []
        real = idx.store.db.file_vector_rows
        monkeypatch.setattr(idx.store.db, "file_vector_rows", lambda **kw: reads.append(kw) or real(**kw))
        for fid in idx.files()["file_id"].tolist()[:4]:
            for windows in (False, True):
                rows = idx.search_indexed_rows(6, file_id=fid, windows=windows)
                assert rows == _frame_rows(idx.search_indexed(6, file_id=fid, windows=windows))
        assert len({r["file_id"] for r in reads}) == 4


def test_the_hit_table_is_kept_until_the_vectors_or_metadata_change(built: tuple[Path, Path],  # noqa: F811
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    ix, _ = built
    with Index.open(ix) as idx:
        table = hit_table(idx.store)
        assert hit_table(idx.store) is table  # kept: no second scan
        windows, files = idx.store.hit_tables()
        assert len(table.window_ids) == len(windows) and len(table.file_values) == len(files)
        for key in ("metadata_version", "generation"):
            before = hit_table(idx.store)
            real_get = idx.store.db.get
            monkeypatch.setattr(idx.store.db, "get", lambda k, key=key, real_get=real_get:
                                f"{real_get(k)}-changed" if k == key else real_get(k))
            assert hit_table(idx.store) is not before
