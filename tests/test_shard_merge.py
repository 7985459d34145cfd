"""The bulk shard merge writes exactly what local ingest's commit writes for the same files.

Two indexes get the same embedded files, one through ``retrieval.ingest.commit_jobs`` (one
Python object per file, local ingest's commit) and one through a shard table and
``retrieval.shard_merge.commit_shard``; every row of ``files``, ``windows`` and ``errors``,
the summary counts and the warning lines must agree, for every kind of file a run meets.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from retrieval.audio.decode import AudioInfo, DecodeReport
from retrieval.ingest import IngestSummary, RootedFile, adopt_decoded, commit_jobs
from retrieval.pipeline import DecodedFile
from retrieval.recipe import Recipe
from retrieval.shard_merge import NEW, commit_shard
from retrieval.shards import ShardFile, files_table
from retrieval.store import Store

DIM = 5
SR = 16000


def _recipe() -> Recipe:
    return Recipe(encoder="logmel", encoder_options={}, encoder_params={}, sample_rate=SR, window_samples=SR,
                  hop_samples=SR // 2, pooling="mean", postprocess="none", precision="fp32", frame_dim=DIM, dim=DIM,
                  silence_db=-60.0, versions={})


def _file(rng: np.random.Generator, windows: int, silent_at: tuple[int, ...] = (), *, nonfinite: int = 0,
          declared: int | None = None, in_frames: int | None = None, window_error: int | None = None) -> DecodedFile:
    silent = np.isin(np.arange(windows), silent_at)
    k = int((~silent).sum())
    frames = windows * SR // 2 + SR // 2
    errors: list[str | None] = [None] * k
    if window_error is not None:
        errors[window_error] = "encoder failed on this window: shape (1, 0)"
    vectors = rng.normal(size=(k, DIM)).astype(np.float32)
    return DecodedFile(
        info=AudioInfo(SR, 1, frames, "WAV", declared), report=DecodeReport(nonfinite, frames, in_frames or frames),
        starts=np.arange(windows, dtype=np.int64) * SR // 2, ends=np.arange(windows, dtype=np.int64) * SR // 2 + SR,
        levels=np.where(silent, -80.0, rng.normal(-25, 4, windows)), silent=silent, vectors=vectors,
        counts=rng.integers(1, 60, k), window_errors=errors,
        file_vector=None if k == 0 or window_error is not None else vectors.mean(0))


def _corpus(seed: int) -> list[tuple[str, str, DecodedFile]]:
    """``(root, relative path, embedded file)`` of every kind a run meets; the same for the same seed."""
    rng = np.random.default_rng(seed)
    return [
        ("/c", "dog/a.wav", _file(rng, 7, (1, 4), nonfinite=3)),
        ("/c", "broken.wav", DecodedFile(error="cannot decode broken.wav: not a sound file")),
        ("/c", "cat/quiet.wav", _file(rng, 3, (0, 1, 2))),
        ("/c", "cat/glitch.wav", _file(rng, 4, window_error=2)),
        ("/c", "cut/long_enough.wav", _file(rng, 5, declared=10 * SR, in_frames=3 * SR)),
        ("/c", "cut/too_short.wav", _file(rng, 1, declared=10 * SR, in_frames=SR // 100)),
        ("/c", "empty.wav", DecodedFile(info=AudioInfo(SR, 1, 0, "WAV"), report=DecodeReport(0, 0, 0),
                                         vectors=np.zeros((0, DIM), np.float32), counts=np.zeros(0, np.int64),
                                         window_errors=[])),
        ("/other", "one.wav", _file(rng, 1)),
        ("/c", "dog/b.wav", _file(rng, 30, tuple(range(0, 30, 7)))),
    ]


def _dump(store: Store) -> dict:
    db = store.db
    files = db.files_table(by_path=True).drop_columns(["indexed_at"]).to_pylist()
    windows = db.window_bounds().to_pylist()
    ids, vectors = db.vectors("window", DIM)
    file_ids, file_vectors = db.vectors("file", DIM)
    errors = db.errors_table().drop_columns(["recorded_at"]).to_pylist()
    return {"files": files, "windows": windows, "ids": ids.tolist(), "vectors": vectors, "file_ids": file_ids.tolist(),
            "file_vectors": file_vectors, "errors": errors, "next_id": db.get("next_id"),
            "silent": db.silent_windows()}


def _commit_both(tmp_path: Path, batches: list[list[tuple[str, str, DecodedFile, int | None]]]) -> tuple[dict, dict]:
    recipe = _recipe()
    out = {}
    for way in ("jobs", "shard"):
        lines: list[str] = []
        summary = IngestSummary()
        with Store.create(tmp_path / way) as store:
            with store.db.transaction():
                store.set_recipe(recipe)
            for batch in batches:
                if way == "jobs":
                    jobs = [adopt_decoded((RootedFile(path=Path(root) / rel, rel_path=rel, size=100 + k, mtime=1.5 + k,
                                                      root=root), f"hash{k}", old), d)
                            for k, (root, rel, d, old) in enumerate(batch)]
                    commit_jobs(store, recipe, jobs, summary, lines.append)
                else:
                    table = files_table([ShardFile(root, rel, 100 + k, 1.5 + k, f"hash{k}", d)
                                         for k, (root, rel, d, _) in enumerate(batch)], recipe.hash())
                    old_ids = np.array([NEW if old is None else old for *_, old in batch], np.int64)
                    commit_shard(store, recipe, table, old_ids, summary, lines.append)
            out[way] = {"db": _dump(store), "summary": asdict(summary), "lines": lines}
    return out["jobs"], out["shard"]


def _assert_same(a: dict, b: dict) -> None:
    assert a["summary"] == b["summary"]
    assert a["lines"] == b["lines"]
    da, db = a["db"], b["db"]
    for key in ("files", "windows", "ids", "file_ids", "errors", "next_id", "silent"):
        assert da[key] == db[key], key
    np.testing.assert_array_equal(da["vectors"], db["vectors"])
    np.testing.assert_array_equal(da["file_vectors"], db["file_vectors"])


def test_a_shard_commits_what_local_ingest_commits(tmp_path: Path) -> None:
    a, b = _commit_both(tmp_path, [[(*f, None) for f in _corpus(0)]])
    _assert_same(a, b)
    s = b["summary"]
    assert (s["files_indexed"], s["files_silent"], s["files_failed"]) == (4, 1, 4)
    assert len(b["db"]["files"]) == 5 and b["db"]["silent"] == 2 + 3 + 5  # a.wav's 2, quiet.wav's 3, b.wav's 5
    reasons = [e["reason"] for e in b["db"]["errors"]]
    for words in ("not a sound file", "encoder failed", "indexed as the", "under the 0.1 s minimum",
                  "holds no audio samples", "3 NaN/Inf samples", "silent throughout"):
        assert any(words in r for r in reasons), words


def test_a_changed_file_replaces_its_rows_in_both(tmp_path: Path) -> None:
    """A second commit re-embeds one file (its old id given) and re-tries a broken one."""
    first = [(*f, None) for f in _corpus(1)]
    again = [("/c", "dog/a.wav", _file(np.random.default_rng(9), 2), 0),
             ("/c", "broken.wav", _file(np.random.default_rng(8), 3), None)]
    a, b = _commit_both(tmp_path, [first, again])
    _assert_same(a, b)
    paths = [f["path"] for f in b["db"]["files"]]
    assert paths.count("dog/a.wav") == 1 and "broken.wav" in paths
    assert not [e for e in b["db"]["errors"] if e["path"] == "broken.wav"]


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_shards(tmp_path: Path, n: int) -> None:
    a, b = _commit_both(tmp_path, [[(*f, None) for f in _corpus(2)[-n:]] if n else []])
    _assert_same(a, b)


@pytest.mark.parametrize("commit_files, commit_windows, cuts", [(None, 15, [5, 4]), (3, 10_000, [3, 3, 3]),
                                                                (None, 10_000, [9]), (None, 1, [1, 2, 1, 1, 1, 2, 1])])
def test_the_driver_stream_cuts_shards_by_windows_or_files(tmp_path: Path, commit_files, commit_windows, cuts) -> None:
    """merge_stream: parts of any size become shards that close at ``commit_files`` files or at
    ``commit_windows`` windows, whichever first (files without windows wait for the next); each
    shard is one commit, the same as committing those files together, and no shard stays on disk."""
    from retrieval.ray_ingest import _Plan, merge_stream
    from retrieval.shards import decoded_table

    corpus = _corpus(3)  # 9 files of 7, 0, 3, 4, 5, 1, 0, 1 and 30 windows
    recipe = _recipe()
    entries = [(RootedFile(path=Path(root) / rel, rel_path=rel, size=100 + k, mtime=1.5 + k, root=root), f"hash{k}",
                None) for k, (root, rel, _) in enumerate(corpus)]
    embedded = decoded_table([d for *_, d in corpus])
    embedded = embedded.add_column(0, "i", pa.array(np.arange(len(corpus), dtype=np.int64)))
    parts = [embedded.slice(0, 3), embedded.slice(3, 0), embedded.slice(3, 4), embedded.slice(7)]
    out = {}
    for way in ("stream", "cuts"):
        summary, lines = IngestSummary(), []
        with Store.create(tmp_path / way) as store:
            with store.db.transaction():
                store.set_recipe(recipe)
            if way == "stream":
                got = merge_stream(iter(parts), _Plan(entries, recipe.hash()), tmp_path / way / "shards", store,
                                   recipe, summary, lines.append, commit_files=commit_files,
                                   commit_windows=commit_windows, commit_s=float("inf"))
                assert got == len(cuts)
            else:
                files = [ShardFile(root, rel, 100 + k, 1.5 + k, f"hash{k}", d) for k, (root, rel, d) in enumerate(corpus)]
                for a, b in zip(np.cumsum([0, *cuts[:-1]]), np.cumsum(cuts)):
                    commit_shard(store, recipe, files_table(files[a:b], recipe.hash()), np.full(b - a, NEW),
                                 summary, lines.append)
            out[way] = {"db": _dump(store), "summary": asdict(summary), "lines": lines}
    _assert_same(out["cuts"], out["stream"])
    assert not list((tmp_path / "stream" / "shards").glob("*"))
