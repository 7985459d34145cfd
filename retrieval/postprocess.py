"""Label-free post-processing of pooled vectors, fitted on the indexed corpus.

DuckDB keeps the raw pooled vectors; the search index holds ``normalize(transform(raw))``
and every query goes through the same transform. The fitted state is stored with the
index and refitted when the corpus changes, so it never needs the raw vectors twice.

Modes:
    none    L2 normalisation only (the raw pooled encoder output, unit length)
    center  subtract the corpus mean, then L2-normalise
    whiten  shrinkage whitening fitted on the corpus: ``(C + lambda I)^(-1/2) (x - mean)``
            with ``C`` the corpus covariance and ``lambda = shrinkage * mean(var)``, then
            L2-normalise. Strong directions are equalised and every other direction is
            kept (scaled by ``lambda^(-1/2)``), so a corpus with fewer vectors than
            dimensions never truncates the space queries are compared in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np

from retrieval.errors import InputError
from retrieval.options import DEFAULT_POSTPROCESS, POSTPROCESS_MODES, PostprocessMode, check_choice  # noqa: F401
#: Fewer fitted vectors than this and centring/whitening fall back to the identity.
MIN_FIT = 2
#: Whitening divides component ``i`` by ``sqrt(var_i + shrinkage * mean(var))``. 1.0 is a
#: half-way whitening: strong components are equalised, weak (noise) ones are not blown
#: up. On FSDD (docs/bench_baseline.md) 0.3 to 3.0 are within 2 points of each other and
#: 0.1 is 3 points worse; a mild setting is the safe default for small corpora.
DEFAULT_SHRINKAGE = 1.0


def check_mode(mode: str) -> PostprocessMode:
    """Return ``mode`` if valid; an unknown mode lists the valid ones (:class:`~retrieval.errors.ChoiceError`)."""
    return check_choice("post-processing", mode, POSTPROCESS_MODES)


def l2_normalize(x: np.ndarray, dtype: type[np.floating] = np.float32) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero. ``(n, D)`` in ``dtype`` (float32 by
    default; float64 where scores are computed in double, as zero-shot does)."""
    x = np.asarray(x, dtype)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(dtype)


@dataclass
class Postprocess:
    """A fitted transform. ``state`` holds arrays only, so it serialises as ``.npz``.

    Attributes:
        mode: one of :data:`POSTPROCESS_MODES`.
        state: ``mean`` ``(D,)`` for center/whiten; for whiten also ``basis`` ``(D, r)``
            (the corpus's principal directions), ``scale`` ``(r,)`` (``(var + lambda)^-1/2``)
            and ``floor`` ``(1,)`` (``lambda^-1/2``, 0 with no shrinkage), so the ``(D, D)``
            matrix is never formed.
    """

    mode: PostprocessMode = "none"
    state: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def fit(cls, mode: str, vectors: np.ndarray, *, shrinkage: float = DEFAULT_SHRINKAGE) -> Postprocess:
        """Fit ``mode`` on ``(n, D)`` raw vectors.

        ``vectors`` are L2-normalised first, as search sees them. Whitening keeps the
        components with non-negligible variance and divides by ``sqrt(var + shrinkage *
        mean_var)``, which keeps noise directions from being blown up. Fewer than
        :data:`MIN_FIT` vectors, or vectors that all point the same way, give the
        identity (L2 normalisation only).
        """
        mode = check_mode(mode)
        if not shrinkage >= 0:
            raise InputError(f"whitening shrinkage must be >= 0; got {shrinkage}")
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise InputError(f"post-processing is fitted on (n, D) vectors; got shape {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise InputError("vectors hold NaN or Inf; drop those rows before fitting post-processing")
        if mode == "none" or len(vectors) < MIN_FIT:
            return cls(mode, {})
        x = l2_normalize(vectors).astype(np.float64)
        mean = x.mean(axis=0)
        if mode == "center":
            return cls(mode, {"mean": mean.astype(np.float32)})
        xc = x - mean
        _, sv, vt = np.linalg.svd(xc, full_matrices=False)
        var = sv**2 / max(len(x) - 1, 1)
        keep = var > var.max() * 1e-6 if var.size else np.zeros(0, bool)
        var, vt = var[keep], vt[keep]
        if not var.size:  # every vector points the same way: nothing to whiten
            return cls(mode, {})
        lam = shrinkage * var.mean()
        return cls(mode, {
            "mean": mean.astype(np.float32),
            "basis": vt.T.astype(np.float32),
            "scale": (1.0 / np.sqrt(var + lam)).astype(np.float32),
            "floor": np.array([1.0 / np.sqrt(lam) if lam > 0 else 0.0], np.float32),
        })

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """``(n, D)`` raw vectors -> ``(n, D')`` unit-length float32 vectors for search."""
        x = l2_normalize(np.atleast_2d(vectors))
        if self.mode == "none" or not self.state:
            return x
        mean = self.state["mean"]
        if x.shape[1] != mean.shape[0]:
            raise InputError(f"vectors have dim {x.shape[1]}; this transform was fitted on dim {mean.shape[0]}")
        x = x - mean
        if self.mode == "whiten":
            basis, scale, floor = self.state["basis"], self.state["scale"], float(self.state["floor"][0])
            x = x * floor + ((x @ basis) * (scale - floor)) @ basis.T
        return l2_normalize(x)

    @property
    def out_dim(self) -> int | None:
        """Output dim, or None when the transform keeps the input dim (every mode does)."""
        return None
