"""``lookup/`` (retrieval.store.lookup) and the search it serves (retrieval.quick_query): a plain
``retrieve query`` answers from it without DuckDB, with exactly the rows the full path gives,
and only while it belongs to the committed state."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from retrieval import quick_query
from retrieval.cli import cli
from retrieval.index import Index
from retrieval.legacy import with_legacy_keys
from retrieval.store import Store
from retrieval.store.lookup import FILES, LOOKUP, Lookup
from tests.serve_fixtures import build_index


@pytest.fixture()
def built(tmp_path: Path) -> tuple[Path, Path]:
    return build_index(tmp_path)


def _clips(corpus: Path) -> list[Path]:
    wavs = sorted(corpus.rglob("*.wav"))
    return [wavs[0], wavs[len(wavs) // 2], wavs[-1]]


def _full(ix: Path, clip: Path, k: int, windows: bool) -> list[dict]:
    with Index.open(ix) as idx:
        rows, _ = idx.search_rows(clip, k, windows=windows)
    return rows


def _same(a: list[dict], b: list[dict]) -> None:
    assert [list(r) for r in a] == [list(r) for r in b]  # same keys, same order
    for x, y in zip(a, b):
        assert {key: v for key, v in x.items() if key != "score"} == {key: v for key, v in y.items() if key != "score"}
        assert x["score"] == pytest.approx(y["score"], abs=1e-6)


@pytest.mark.parametrize("windows", [False, True])
def test_the_lookup_gives_the_full_paths_rows(built: tuple[Path, Path], windows: bool) -> None:
    corpus, ix = built
    assert (ix / LOOKUP / "lookup.json").is_file()  # the ingest's clean close left it
    for clip in _clips(corpus):
        for k in (1, 5, 100):
            quick = quick_query.search_rows(ix, clip, k, windows=windows)
            assert quick is not None
            _same(quick[0], _full(ix, clip, k, windows))


def test_metadata_columns_and_several_roots_come_through(tmp_path: Path) -> None:
    corpus, ix = build_index(tmp_path)
    wavs = sorted(corpus.rglob("*.wav"))
    meta = tmp_path / "meta.csv"
    lines = ["path,label,take,weight,ok"] + [
        f"{w.relative_to(corpus)},{w.parent.name},{i},{i / 7:.17g},{'true' if i % 2 else 'false'}"
        for i, w in enumerate(wavs)]
    meta.write_text("\n".join(lines) + "\n")
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(wavs[0], other / "ünï cøde.wav")
    Index.build([corpus, other], ix, labels_csv=meta).close()
    look = Lookup.open(ix)
    assert look is not None and len(look.meta["roots"]) == 2 and "take" in look.meta["columns"]
    for clip in _clips(corpus) + [other / "ünï cøde.wav"]:
        quick = quick_query.search_rows(ix, clip, 50)
        assert quick is not None
        full = _full(ix, clip, 50, False)
        _same(quick[0], full)
        assert "root" in full[0] and any(isinstance(r["take"], int) for r in full)


def test_a_later_ingest_rewrites_it(built: tuple[Path, Path]) -> None:
    corpus, ix = built
    clip = _clips(corpus)[0]
    shutil.copy(clip, clip.with_name("added_copy.wav"))
    res = CliRunner().invoke(cli, ["index", str(corpus), "--index", str(ix)])
    assert res.exit_code == 0, res.output
    quick = quick_query.search_rows(ix, clip, 3)
    assert quick is not None
    assert {r["path"] for r in quick[0][:2]} == {str(clip.relative_to(corpus)),
                                                  str(clip.with_name("added_copy.wav").relative_to(corpus))}
    _same(quick[0], _full(ix, clip, 3, False))


def test_an_unchanged_index_keeps_its_lookup(built: tuple[Path, Path]) -> None:
    _, ix = built
    before = {name: (ix / name).stat().st_mtime_ns for name in FILES}
    (ix / "info.json").unlink()  # info opens the index and records again
    res = CliRunner().invoke(cli, ["info", "--index", str(ix)])
    assert res.exit_code == 0, res.output
    assert {name: (ix / name).stat().st_mtime_ns for name in FILES} == before


@pytest.mark.parametrize("change", ["lookup_deleted", "lookup_damaged", "wal", "faiss_replaced", "no_summary"])
def test_anything_changed_since_sends_it_down_the_full_path(built: tuple[Path, Path], change: str) -> None:
    corpus, ix = built
    clip = _clips(corpus)[1]
    assert quick_query.search_rows(ix, clip, 3) is not None
    if change == "lookup_deleted":
        (ix / LOOKUP / "files.jsonl").unlink()
    elif change == "lookup_damaged":
        win = ix / LOOKUP / "windows.npy"
        data = bytearray(win.read_bytes())
        data[-1] ^= 0x01  # same size: the modification time moves
        win.write_bytes(bytes(data))
    elif change == "wal":  # what a writer at work (or killed after a commit) leaves
        (ix / "meta.duckdb.wal").write_bytes(b"")
    elif change == "faiss_replaced":
        win = ix / "windows.faiss"
        os.utime(win, ns=(win.stat().st_atime_ns, win.stat().st_mtime_ns + 10**9))
    else:
        (ix / "info.json").unlink()
    assert quick_query.search_rows(ix, clip, 3) is None
    if change == "wal":
        (ix / "meta.duckdb.wal").unlink()
    res = CliRunner().invoke(cli, ["query", str(clip), "--index", str(ix), "--json", "-k", "3"])
    assert res.exit_code == 0, res.output
    _same(json.loads(res.output), with_legacy_keys(_full(ix, clip, 3, False)))  # --json keeps segment_id too


def test_a_lookup_disagreeing_with_faiss_is_not_used(built: tuple[Path, Path]) -> None:
    corpus, ix = built
    meta_path = ix / LOOKUP / "lookup.json"
    meta = json.loads(meta_path.read_text())
    meta["generation"] = "9" * len(str(meta["generation"]))  # same length: the file keeps its size
    assert meta["generation"] != json.loads(meta_path.read_text())["generation"]
    stat = meta_path.stat()
    meta_path.write_text(json.dumps(meta))
    os.utime(meta_path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # so the summary's stamp still holds
    assert meta_path.stat().st_size == stat.st_size
    assert quick_query.search_rows(ix, _clips(corpus)[0], 3) is None


def test_values_json_cannot_carry_leave_no_lookup(built: tuple[Path, Path]) -> None:
    """A date (or decimal, or blob) would come back as a string: no lookup rather than another answer."""
    import datetime as dt

    from retrieval.store import lookup

    corpus, ix = built
    look = Lookup.open(ix)
    assert look is not None
    row = {"file_id": 1, "path": "a.wav", "root": None, "duration_s": 1.0, "recorded": dt.date(2024, 5, 1)}
    assert not lookup.write(ix, meta=look.meta, windows=np.zeros((0, 4), np.int64), files=[row], postprocess={})
    assert not any((ix / name).exists() for name in FILES)
    assert quick_query.search_rows(ix, _clips(corpus)[0], 3) is None


def test_lookup_ids_are_sorted_and_cover_every_vector(built: tuple[Path, Path]) -> None:
    _, ix = built
    look = Lookup.open(ix)
    assert look is not None
    with Store.open(ix) as store:
        ids = store.vectors("window").ids()
    assert np.all(np.diff(look.windows[:, 0]) > 0)
    assert np.array_equal(look.files_of(ids), np.asarray([look.hit_rows(ids[i:i + 1])[int(ids[i])]["file_id"]
                                                          for i in range(len(ids))]))


def test_a_plain_query_loads_no_duckdb(built: tuple[Path, Path]) -> None:
    corpus, ix = built
    probe = ("import json, sys\nfrom retrieval.cli import main\nsys.argv = ['retrieve', *json.loads(sys.argv[1])]\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print('MODULES ' + json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n")

    def loaded(args: list[str]) -> set[str]:
        out = subprocess.run([sys.executable, "-c", probe, json.dumps(args)], capture_output=True, text=True,
                             timeout=120, check=True).stdout
        return set(json.loads(next(ln for ln in out.splitlines() if ln.startswith("MODULES "))[8:]))

    clip = str(_clips(corpus)[0])
    assert "duckdb" not in loaded(["query", clip, "--index", str(ix)])
    assert "duckdb" in loaded(["query", clip, "--index", str(ix), "--where", "duration_s > 0"])
