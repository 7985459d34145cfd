"""Store damage: changed FAISS bytes, malformed sidecars, temp files left by a kill (issue 11, items 7 and 18)."""

import json
import shutil

import numpy as np
import pytest

from retrieval import synth
from retrieval.index import Index
from retrieval.ingest import ingest
from retrieval.postprocess import l2_normalize
from retrieval.store import Store
from retrieval.store.vectors import VectorIndex, sidecar


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One index of the demo corpus per module; each test damages its own copy."""
    root = tmp_path_factory.mktemp("built")
    synth.write_demo_corpus(root / "corpus", per_class=4)
    ingest(root / "corpus", root / "ix")
    return root / "corpus", root / "ix"


@pytest.fixture
def indexed(built, tmp_path):
    corpus, ix = built
    shutil.copytree(ix, tmp_path / "ix")
    return corpus, tmp_path / "ix"


def _flip_bytes(path, at, n=64):
    """Change ``n`` bytes in place at ``at`` (size kept): what a bad sector or a stray write does."""
    data = bytearray(path.read_bytes())
    for i in range(at, at + n):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def test_changed_bytes_in_a_faiss_file_are_caught_and_rebuilt(indexed):
    corpus, ix = indexed
    path = ix / "windows.faiss"
    _flip_bytes(path, path.stat().st_size // 2)  # inside the float32 vectors: FAISS still reads it
    with Index.open(ix) as idx:
        hits = idx.search(corpus / "vowel" / "vowel_01.wav", k=5)
        info = idx.info()
    assert hits.score.max() <= 1.0 + 1e-5 and hits.path[0] == "vowel/vowel_01.wav"
    assert "window" in info["repaired_on_open"] and info["consistent"]
    with Store.open(ix) as store:  # the rebuilt file was saved: the next open trusts it
        store.vectors("window")
        assert store.repaired == []


def test_the_checksum_is_recorded_and_verified(tmp_path):
    rng = np.random.default_rng(0)
    x = l2_normalize(rng.standard_normal((300, 16))).astype(np.float32)
    ids = np.arange(300, dtype=np.int64)
    VectorIndex.build(ids, x, "1").save(tmp_path / "s.faiss")
    meta = json.loads(sidecar(tmp_path / "s.faiss").read_text())
    assert meta["checksum"].startswith("xxh3_128:")
    assert VectorIndex.load(tmp_path / "s.faiss") is not None
    _flip_bytes(tmp_path / "s.faiss", 2000, 4)
    assert VectorIndex.load(tmp_path / "s.faiss") is None


def test_a_sidecar_without_a_checksum_is_not_trusted(tmp_path):
    """Every save records one; a sidecar without it did not come from a save, and the file is rebuilt."""
    x = l2_normalize(np.random.default_rng(1).standard_normal((50, 8))).astype(np.float32)
    VectorIndex.build(np.arange(50, dtype=np.int64), x, "1").save(tmp_path / "s.faiss")
    meta = json.loads(sidecar(tmp_path / "s.faiss").read_text())
    del meta["checksum"]
    sidecar(tmp_path / "s.faiss").write_text(json.dumps(meta))
    assert VectorIndex.load(tmp_path / "s.faiss") is None


@pytest.mark.parametrize("text", ["[]", "[1, 2]", '"text"', "null", "{not json", '{"generation": 1, "stats": []}'])
def test_a_malformed_sidecar_counts_as_stale(indexed, text):
    _, ix = indexed
    sidecar(ix / "windows.faiss").write_text(text)
    assert VectorIndex.load(ix / "windows.faiss") is None
    with Store.open(ix) as store:
        info = store.info()
    assert info["consistent"] and "window" in info["repaired_on_open"]


def test_faiss_temp_files_left_by_a_kill_are_removed_by_the_next_writer(indexed):
    _, ix = indexed
    left = [ix / "windows.faiss.k3j2l1.tmp", ix / "windows.faiss.json.a8b7c6.tmp", ix / "files.faiss.zz9.tmp",
            ix / "windows.faiss.0badf00d.exact.npy.q1w2e3.tmp", ix / "windows.faiss.0badf00d.exact.npy",
            ix / "windows.faiss.0badf00d.ids.npy"]
    for path in left:
        path.write_bytes(b"partial write")
    half_published = ix / "snapshots" / ".tmp-0123456789ab"
    half_published.mkdir()
    (half_published / "meta.duckdb").write_bytes(b"partial copy")
    left.append(half_published)
    with Store.open(ix) as reader:  # readers never delete: a writer may be mid-write
        reader.info()
    assert all(p.exists() for p in left)
    with Store.open(ix, writable=True) as store:
        assert not [p for p in left if p.exists()]
        assert store.vectors("window").ntotal > 0 and store.repaired == []
