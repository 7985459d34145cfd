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
    y = (l2_normalize(x) - p.state["mean"]) @ p.state["projection"]
    np.testing.assert_allclose(np.cov(y.T), np.eye(y.shape[1]), atol=1e-3)
    assert p.apply(x).shape == (500, p.out_dim)
    assert np.linalg.norm(p.apply(x), axis=1) == pytest.approx(np.ones(500), abs=1e-5)


def test_default_shrinkage_is_partial_whitening() -> None:
    # Unit rows [1,0], [0,1], [1,0], [0,1]: mean [.5,.5]; one component along [1,-1]/sqrt(2)
    # with values +-sqrt(.5), variance 4 * .5 / 3 = 2/3 (the other has none and is dropped).
    # Scale 1/sqrt(2/3 + 1.0 * 2/3) = sqrt(3)/2, so each projection entry is sqrt(6)/4.
    assert DEFAULT_SHRINKAGE == 1.0
    p = Postprocess.fit("whiten", np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 7.0]]))
    assert p.out_dim == 1
    assert np.abs(p.state["projection"][:, 0]).tolist() == pytest.approx([np.sqrt(6) / 4] * 2)
    # Identical directions leave nothing to whiten: identity (normalisation only).
    same = Postprocess.fit("whiten", np.array([[2.0, 0.0], [5.0, 0.0]]))
    assert same.state == {} and same.apply(np.array([[0.0, 3.0]])).tolist() == [[0.0, 1.0]]


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
