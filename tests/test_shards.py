"""Parquet shards: a round trip keeps every field bit for bit, and only complete shards are seen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.audio.decode import AudioInfo, DecodeReport
from retrieval.pipeline import DecodedFile
from retrieval.shards import (ShardFile, complete_shards, files_table, next_number, read_shard, remove_partial,
                              shard_name, write_shard)

DIM = 6


def _embedded(rng: np.random.Generator, windows: int, silent_every: int = 3) -> DecodedFile:
    silent = np.arange(windows) % silent_every == 1
    k = int((~silent).sum())
    return DecodedFile(
        info=AudioInfo(22050, 2, 12345, "WAV", 12345), report=DecodeReport(3, 9000, 12345),
        starts=np.arange(windows, dtype=np.int64) * 400, ends=np.arange(windows, dtype=np.int64) * 400 + 800,
        levels=rng.normal(-30, 5, windows), silent=silent,
        vectors=rng.normal(size=(k, DIM)).astype(np.float32), counts=rng.integers(1, 9, k),
        window_errors=[None] * k, file_vector=rng.normal(size=DIM).astype(np.float32),
    )


def _files(rng: np.random.Generator) -> list[ShardFile]:
    return [
        ShardFile("/corpus", "a/one.wav", 100, 1.5, "h1", _embedded(rng, 7)),
        ShardFile("/corpus", "b/\u00e9t\u00e9.flac", 200, 2.25, "h2", _embedded(rng, 1, silent_every=2)),
        ShardFile("/other", "bad.wav", 16, 3.0, "h3", DecodedFile(error="not a sound file")),
        ShardFile("/corpus", "silent.wav", 50, 4.0, "h4", DecodedFile(
            info=AudioInfo(16000, 1, 800, "WAV"), report=DecodeReport(0, 800, 800),
            starts=np.array([0], np.int64), ends=np.array([800], np.int64), levels=np.array([-90.0]),
            silent=np.array([True]), vectors=np.zeros((0, DIM), np.float32), counts=np.zeros(0, np.int64),
            window_errors=[], file_vector=None)),
    ]


def test_round_trip_is_exact(tmp_path: Path) -> None:
    files = _files(np.random.default_rng(0))
    path = write_shard(tmp_path, 3, files_table(files, "recipe123"))
    assert path.name == "part-00003.parquet"
    hashes, back = read_shard(path, DIM)
    assert hashes == ["recipe123"] * len(files)
    for a, b in zip(files, back):
        assert (a.root, a.path, a.size, a.mtime, a.content_hash) == (b.root, b.path, b.size, b.mtime, b.content_hash)
        da, db = a.decoded, b.decoded
        assert da.error == db.error and da.info == db.info and da.report == db.report
        if da.error is not None:
            assert db.vectors is None
            continue
        for name in ("starts", "ends", "levels", "silent", "vectors", "counts"):
            x, y = getattr(da, name), getattr(db, name)
            assert x.dtype == y.dtype and x.shape == y.shape, name
            np.testing.assert_array_equal(x, y, err_msg=name)
        assert da.window_errors == db.window_errors
        if da.file_vector is None:
            assert db.file_vector is None
        else:
            np.testing.assert_array_equal(da.file_vector, db.file_vector)


def test_only_complete_shards_are_listed_and_partial_ones_removed(tmp_path: Path) -> None:
    files = _files(np.random.default_rng(1))[:1]
    write_shard(tmp_path, 0, files_table(files, "r"))
    write_shard(tmp_path, 12, files_table(files, "r"))
    (tmp_path / (shard_name(13) + ".tmp")).write_bytes(b"PAR1 half")  # a writer killed mid-shard
    (tmp_path / "notes.txt").write_text("not a shard")
    assert [p.name for p in complete_shards(tmp_path)] == ["part-00000.parquet", "part-00012.parquet"]
    assert next_number(tmp_path) == 13
    assert remove_partial(tmp_path) == 1
    assert not (tmp_path / (shard_name(13) + ".tmp")).exists()
    assert complete_shards(tmp_path / "missing") == [] and next_number(tmp_path / "missing") == 0


def test_write_replaces_nothing_until_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails midway leaves no file under the complete name."""
    import retrieval.shards as shards

    def broken(table, where, **options) -> None:  # noqa: ANN001, ANN003
        Path(where).write_bytes(b"PAR1")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shards.pq, "write_table", broken)
    with pytest.raises(OSError):
        write_shard(tmp_path, 0, files_table(_files(np.random.default_rng(2))[:1], "r"))
    assert complete_shards(tmp_path) == []
