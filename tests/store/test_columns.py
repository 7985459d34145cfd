"""Arrow columns from numpy buffers: what DuckDB reads back, and no pandas on the way."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from retrieval.store import columns as col


def test_columns_round_trip_through_duckdb():
    rng = np.random.default_rng(0)
    n, dim = 7, 5
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    null = np.array([0, 1, 0, 0, 1, 0, 0], bool)
    names = ["a", None, "ünï/ç", "", "x" * 300, None, "z"]
    tbl = col.table({
        "i": col.numeric(np.arange(n) * 3, "int64"),
        "f": col.numeric(np.linspace(0, 1, n), "float32"),
        "b": col.booleans(null),
        "s": col.strings(names),
        "v": col.vectors(vecs, null=null),
    })
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t (i BIGINT, f REAL, b BOOLEAN, s VARCHAR, v FLOAT[{dim}])")
    con.register("_t", tbl)
    con.execute("INSERT INTO t SELECT * FROM _t")
    rows = con.execute("SELECT i, f, b, s, v FROM t").fetchall()
    assert [r[0] for r in rows] == list(np.arange(n) * 3)
    np.testing.assert_array_equal([r[1] for r in rows], np.linspace(0, 1, n).astype(np.float32))
    assert [r[2] for r in rows] == null.tolist()
    assert [r[3] for r in rows] == names
    for r, v, missing in zip(rows, vecs, null):
        assert (r[4] is None) if missing else np.array_equal(np.array(r[4], np.float32), v)


def test_to_numpy_reads_sliced_columns_and_refuses_nulls():
    tbl = duckdb.connect().sql("SELECT range::BIGINT AS a FROM range(10)").arrow()
    a = tbl.column("a") if hasattr(tbl, "column") else tbl.read_all().column("a")
    np.testing.assert_array_equal(col.to_numpy(a.slice(3, 4)), [3, 4, 5, 6])
    with pytest.raises(ValueError, match="NULL"):
        col.to_numpy(pa.array([1, None], pa.int64()))
    with pytest.raises(ValueError, match="not a numeric"):
        col.to_numpy(col.strings(["a"]))


def test_building_and_reading_columns_never_imports_pandas():
    code = (
        "import sys, numpy as np, duckdb\n"
        "from retrieval.store import columns as col\n"
        "t = col.table({'a': col.numeric(np.arange(3), 'int64'), 's': col.strings(['x', None, 'y']),\n"
        "               'v': col.vectors(np.zeros((3, 2), np.float32), null=np.array([0, 1, 0], bool))})\n"
        "con = duckdb.connect(); con.register('_t', t)\n"
        "back = con.sql('SELECT a FROM _t').arrow()\n"
        "back = back if hasattr(back, 'column') else back.read_all()\n"
        "assert col.to_numpy(back.column('a')).tolist() == [0, 1, 2]\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
