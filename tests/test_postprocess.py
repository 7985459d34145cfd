"""Post-processing fitted on the corpus."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.errors import InputError, UnknownNameError
from retrieval.postprocess import DEFAULT_SHRINKAGE, Postprocess, l2_normalize


def test_l2_normalize_keeps_zero_rows() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert out.tolist() == [[pytest.approx(0.6), pytest.approx(0.8)], [0.0, 0.0]]
    assert out.dtype == np.float32


def test_center_by_hand() -> None:
    # Unit vectors [1,0] and [0,1]; mean [.5,.5]; centred [.5,-.5] and [-.5,.5].
    p = Postprocess.fit("center", np.array([[2.0, 0.0], [0.0, 5.0]]))
    assert p.state["mean"].tolist() == pytest.approx([0.5, 0.5])
    s = np.sqrt(0.5)
    assert p.apply(np.array([[1.0, 0.0]])).tolist() == [[pytest.approx(s), pytest.approx(-s)]]
    assert p.out_dim is None


def test_whiten_equalises_the_fitted_corpus() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4)) * np.array([10.0, 1.0, 1.0, 1.0]) + 20.0
    p = Postprocess.fit("whiten", x, shrinkage=0.0)
    st = p.state
    z = ((l2_normalize(x) - st["mean"]) @ st["basis"]) * st["scale"]
    np.testing.assert_allclose(np.cov(z.T), np.eye(z.shape[1]), atol=1e-3)
    assert p.apply(x).shape == (500, 4) and p.out_dim is None
    assert np.linalg.norm(p.apply(x), axis=1) == pytest.approx(np.ones(500), abs=1e-5)


def test_default_shrinkage_is_partial_whitening_and_keeps_every_direction() -> None:
    # Unit rows [1,0], [0,1], [1,0], [0,1]: mean [.5,.5]; one component along [1,-1]/sqrt(2)
    # with values +-sqrt(.5), variance 4 * .5 / 3 = 2/3 (the other has none).
    # lambda = 1.0 * 2/3: scale 1/sqrt(2/3 + 2/3) = sqrt(3)/2, floor 1/sqrt(2/3) = sqrt(1.5).
    assert DEFAULT_SHRINKAGE == 1.0
    p = Postprocess.fit("whiten", np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 7.0]]))
    assert np.abs(p.state["basis"][:, 0]).tolist() == pytest.approx([np.sqrt(0.5)] * 2)
    assert p.state["scale"].tolist() == pytest.approx([np.sqrt(3) / 2])
    assert p.state["floor"].tolist() == pytest.approx([np.sqrt(1.5)])
    s = np.sqrt(0.5)
    assert p.apply(np.array([[1.0, 0.0]])).tolist() == [[pytest.approx(s), pytest.approx(-s)]]
    # the corpus never varies along [1,1]: a query there keeps it (PCA truncation would zero it)
    assert p.apply(np.array([[1.0, 1.0]])).tolist() == [[pytest.approx(s), pytest.approx(s)]]
    # Identical directions leave nothing to whiten: identity (normalisation only).
    same = Postprocess.fit("whiten", np.array([[2.0, 0.0], [5.0, 0.0]]))
    assert same.state == {} and same.apply(np.array([[0.0, 3.0]])).tolist() == [[0.0, 1.0]]


def test_shrinkage_whitening_equals_the_dense_matrix() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 12)) @ rng.normal(size=(12, 12))  # fewer rows than 3x dims, full rank
    p = Postprocess.fit("whiten", x, shrinkage=0.5)
    u = l2_normalize(x).astype(np.float64)
    c = np.cov((u - u.mean(0)).T)
    w, v = np.linalg.eigh(c)
    lam = 0.5 * w[w > w.max() * 1e-6].mean()
    dense = v @ np.diag(1.0 / np.sqrt(np.maximum(w, 0) + lam)) @ v.T
    q = rng.normal(size=(5, 12))
    expected = l2_normalize((l2_normalize(q) - u.mean(0)) @ dense)
    np.testing.assert_allclose(p.apply(q), expected, atol=1e-4)


def test_few_vectors_fall_back_to_identity_and_bad_input_raises() -> None:
    p = Postprocess.fit("whiten", np.array([[1.0, 2.0]]))
    assert p.state == {} and p.apply(np.array([[3.0, 4.0]])).tolist() == [[pytest.approx(0.6), pytest.approx(0.8)]]
    with pytest.raises(UnknownNameError, match="none, center, whiten"):
        Postprocess.fit("pca", np.ones((3, 2)))
    with pytest.raises(InputError, match="NaN or Inf"):
        Postprocess.fit("center", np.array([[np.nan, 1.0], [1.0, 1.0]]))
    with pytest.raises(InputError, match=r"\(n, D\) vectors"):
        Postprocess.fit("center", np.ones(3))
    with pytest.raises(InputError, match="shrinkage must be >= 0"):
        Postprocess.fit("whiten", np.ones((3, 2)), shrinkage=-1)
    with pytest.raises(InputError, match="dim 3; this transform was fitted on dim 2"):
        Postprocess.fit("center", np.eye(2)).apply(np.ones((1, 3)))
