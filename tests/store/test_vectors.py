import numpy as np
import pytest

from retrieval.postprocess import l2_normalize
from retrieval.store.vectors import VectorIndex, sidecar


def _data(n=500, d=24, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, d))
    x = centres[rng.integers(0, 8, n)] + 0.3 * rng.standard_normal((n, d))
    return l2_normalize(x), rng.permutation(10_000)[:n].astype(np.int64)


def test_topk_equals_numpy_brute_force():
    x, ids = _data()
    q, _ = _data(20, seed=1)
    vi = VectorIndex.build(ids, x, "1")
    scores, got = vi.search(q, 10)
    sims = q @ x.T
    pos = {v: i for i, v in enumerate(ids)}
    for i in range(len(q)):
        order = np.argsort(-sims[i], kind="stable")[:10]
        np.testing.assert_allclose(scores[i], sims[i][order], atol=1e-5)  # same top-10 scores, best first
        np.testing.assert_allclose(sims[i][[pos[j] for j in got[i]]], scores[i], atol=1e-5)  # ids carry them
        assert set(got[i]) == set(ids[order])  # clustered data: no ties at the cut


def test_allowed_ids_restrict_the_search():
    x, ids = _data()
    allowed = ids[::7]
    _, got = VectorIndex.build(ids, x, "1").search(x[:3], 5, allowed)
    assert set(got.ravel()) <= set(allowed)


def test_remove_and_atomic_save_roundtrip(tmp_path):
    x, ids = _data()
    vi = VectorIndex.build(ids, x, "7")
    assert vi.remove(ids[:10]) == 10
    vi.save(tmp_path / "s.faiss")
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    back = VectorIndex.load(tmp_path / "s.faiss")
    assert back.ntotal == 490 and back.generation == "7"
    _, got = back.search(x[:1], 490)
    assert not set(got.ravel()) & set(ids[:10])


def test_load_rejects_a_sidecar_that_disagrees(tmp_path):
    x, ids = _data()
    VectorIndex.build(ids, x, "1").save(tmp_path / "s.faiss")
    sidecar(tmp_path / "s.faiss").write_text('{"generation": "1", "ntotal": 3}')
    assert VectorIndex.load(tmp_path / "s.faiss") is None
    (tmp_path / "s.faiss").write_bytes(b"garbage")
    assert VectorIndex.load(tmp_path / "s.faiss") is None


def test_dimension_mismatch_names_both():
    x, ids = _data()
    with pytest.raises(Exception, match="dim 5.*dim 24"):
        VectorIndex.build(ids, x, "1").search(np.zeros((1, 5), np.float32), 3)
