"""Classifier heads on frozen window vectors: fit one binary head per target, score vectors with it.

A head is logistic (``linear``: sklearn's ``LogisticRegression``) or a one-hidden-layer MLP
(``mlp``: trained with torch's Adam on the BCE loss). Both are stored as plain arrays and
scored with numpy, so scoring needs no torch. Several targets are one-vs-rest: one head
each (multi-label, sigmoid outputs).

Inputs are the index's search vectors (post-processed, unit length) multiplied by
``sqrt(D)``, so each dimension is about unit scale and the default regularisation does not
depend on the encoder's width. Positives and negatives are reweighted so each side carries
the same total weight (within a side, the given weights keep their ratios): a score of 0.5
is the decision boundary that margin sampling uses.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from retrieval.errors import InputError

from retrieval.options import HEAD_KINDS, HeadKind  # noqa: E402,F401  (re-exported)
#: Inverse L2 strength of the logistic head (sklearn's ``C``), on inputs scaled to unit-size dimensions.
LINEAR_C = 1.0
MLP_HIDDEN = 64
MLP_EPOCHS = 150
MLP_LR = 1e-2
MLP_WEIGHT_DECAY = 1e-3
#: Rows scored at a time (bounds the memory of an MLP's hidden layer on 1M windows).
SCORE_CHUNK = 262_144


@dataclass(frozen=True)
class Head:
    """A fitted binary head. ``params`` are float32 arrays: ``coef (D,)``, ``intercept (1,)`` for
    ``linear``; ``w1 (D, H)``, ``b1 (H,)``, ``w2 (H,)``, ``b2 (1,)`` for ``mlp``. Input scaling is
    folded into them, so they apply to the unit search vectors directly."""

    kind: HeadKind
    params: dict[str, np.ndarray]

    @property
    def dim(self) -> int:
        return int((self.params["coef"] if self.kind == "linear" else self.params["w1"]).shape[0])

    def logits(self, x: np.ndarray) -> np.ndarray:
        """``(n, D)`` float32 search vectors -> ``(n,)`` float32 logits."""
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InputError(f"head expects (n, {self.dim}) vectors; got shape {x.shape}")
        out = np.empty(len(x), np.float32)
        p = self.params
        for a in range(0, len(x), SCORE_CHUNK):
            chunk = x[a:a + SCORE_CHUNK]
            if self.kind == "linear":
                out[a:a + len(chunk)] = chunk @ p["coef"] + p["intercept"][0]
            else:
                hidden = np.maximum(chunk @ p["w1"] + p["b1"], 0.0)
                out[a:a + len(chunk)] = hidden @ p["w2"] + p["b2"][0]
        return out

    def scores(self, x: np.ndarray) -> np.ndarray:
        """``(n, D)`` -> ``(n,)`` float32 probabilities in [0, 1]."""
        z = np.clip(self.logits(x), -60.0, 60.0)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def balanced_weights(y: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``weight`` rescaled so positives (``y == 1``) and negatives carry equal totals; each side sums to n/2."""
    y = np.asarray(y, bool)
    w = np.asarray(weight, np.float64).copy()
    n = len(y)
    for side in (y, ~y):
        total = w[side].sum()
        if total > 0:
            w[side] *= (n / 2) / total
    return w


def fit_head(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None, *, kind: HeadKind = "linear",
             seed: int = 0) -> Head:
    """Fit a binary head.

    Args:
        x: ``(n, D)`` float32 unit search vectors.
        y: ``(n,)`` bool, True for positives.
        weight: ``(n,)`` per-row weights (1 for labels, W for weak negatives); None = all 1.
        kind: ``linear`` or ``mlp``.
        seed: seeds the MLP's initialisation (the logistic fit is deterministic).

    Raises:
        InputError: an unknown kind, or no positive or no negative row.
    """
    if kind not in HEAD_KINDS:
        raise InputError(f"unknown head {kind!r}; choose one of {', '.join(HEAD_KINDS)}")
    x = np.asarray(x, np.float32)
    y = np.asarray(y, bool)
    if not y.any() or y.all():
        raise InputError(f"a head needs positive and negative windows; got {int(y.sum())} positive and "
                         f"{int((~y).sum())} negative (label some of each, or allow weak negatives)")
    w = balanced_weights(y, np.ones(len(y)) if weight is None else weight)
    scale = np.float32(np.sqrt(x.shape[1]))
    if kind == "linear":
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        model = LogisticRegression(C=LINEAR_C, max_iter=1000)
        # one BLAS thread: these fits are small (thousands of rows), and on a loaded 2-core
        # machine a multi-threaded BLAS made each one 5-25x slower (measured: 0.9 s vs 0.04 s)
        with threadpool_limits(limits=1):
            model.fit(x * scale, y, sample_weight=w)
        return Head("linear", {"coef": (model.coef_[0] * scale).astype(np.float32),
                               "intercept": model.intercept_.astype(np.float32)})
    return _fit_mlp(x * scale, y, w, scale, seed)


def _fit_mlp(x: np.ndarray, y: np.ndarray, w: np.ndarray, scale: np.float32, seed: int) -> Head:
    import torch

    gen = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    w1 = torch.nn.Parameter(torch.randn(d, MLP_HIDDEN, generator=gen) * np.sqrt(2.0 / d))
    b1 = torch.nn.Parameter(torch.zeros(MLP_HIDDEN))
    w2 = torch.nn.Parameter(torch.randn(MLP_HIDDEN, generator=gen) * np.sqrt(1.0 / MLP_HIDDEN))
    b2 = torch.nn.Parameter(torch.zeros(1))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    wt = torch.from_numpy((w / w.mean()).astype(np.float32))
    opt = torch.optim.Adam([w1, b1, w2, b2], lr=MLP_LR, weight_decay=MLP_WEIGHT_DECAY)
    loss_fn = torch.nn.BCEWithLogitsLoss(weight=wt)
    for _ in range(MLP_EPOCHS):  # full batch: a few thousand to a few tens of thousands of rows
        opt.zero_grad()
        loss = loss_fn(torch.relu(xt @ w1 + b1) @ w2 + b2, yt)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return Head("mlp", {"w1": (w1 * scale).numpy().astype(np.float32), "b1": b1.numpy().astype(np.float32),
                            "w2": w2.numpy().astype(np.float32), "b2": b2.numpy().astype(np.float32)})
