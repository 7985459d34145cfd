"""Zero-shot audio classification with a text-audio encoder (CLAP).

Classes are described by prompts; each class vector is the prompt ensemble of its label
(the mean of the L2-normalised text vectors of every template, renormalised). A file's
score for a class is the cosine between its audio vector and the class vector;
probabilities are a softmax over classes of ``cosine * logit_scale`` (CLAP's own
``exp(logit_scale_a)`` when known, i.e. temperature ``1 / logit_scale``).

Everything after the text vectors is plain numpy::

    classes = class_vectors(encoder.text_embeddings, labels)          # (C, D)
    scores = zero_shot_scores(file_vectors, classes, logit_scale=encoder.logit_scale)
    predicted = zero_shot_classify(scores, labels)                    # n labels
    metrics = zero_shot_eval(scores, true_labels, labels)             # accuracy, mAP

``file_vectors`` are the raw mean-pooled audio vectors (not centred or whitened: those
transforms are fitted on audio only and would move audio away from text).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from retrieval import progress
from retrieval.errors import InputError
from retrieval.metrics import label_average_precisions
from retrieval.options import LABEL_SEP
from retrieval.postprocess import l2_normalize

if TYPE_CHECKING:
    import pandas as pd

#: The default prompt ensemble. ``{label}`` is replaced by the class name.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "{label}",
    "the sound of a {label}",
    "a recording of {label}",
    "this is a sound of {label}",
)
#: CLAP's initial logit scale (1 / 0.07), used when the model's own is not given.
DEFAULT_LOGIT_SCALE = 1.0 / 0.07
#: Prompts embedded per text-tower call (rounded down to whole labels), so a progress bar can move.
PROMPTS_PER_CALL = 256


@dataclass(frozen=True)
class ZeroShotScores:
    """Scores of ``n`` files against ``C`` classes.

    Attributes:
        cosine: ``(n, C)`` float32 cosine similarity in [-1, 1].
        probs: ``(n, C)`` float32 softmax over classes of ``cosine * logit_scale``; rows sum to 1.
        logit_scale: the scale used.
    """

    cosine: np.ndarray
    probs: np.ndarray
    logit_scale: float


def prompts(labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[str]:
    """All prompts, label-major: ``[t0(l0), t1(l0), ..., t0(l1), ...]`` (``C * K`` strings).

    Raises:
        InputError: no labels, no templates, a template without ``{label}``, or duplicate labels.
    """
    labels = list(labels)
    templates = list(templates)
    if not labels or not templates:
        raise InputError(f"zero-shot needs at least one label and one template; got {len(labels)} and {len(templates)}")
    bad = [t for t in templates if "{label}" not in t]
    if bad:
        raise InputError(f"every template needs a '{{label}}' placeholder; these lack it: {bad}")
    dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dupes:
        raise InputError(f"labels must be unique; repeated: {dupes}")
    return [t.replace("{label}", lab) for lab in labels for t in templates]


def ensemble(text_vectors: np.ndarray, n_templates: int) -> np.ndarray:
    """Prompt ensembling: ``(C * K, D)`` label-major text vectors -> ``(C, D)`` float32 unit vectors.

    Each text vector is L2-normalised, the ``K`` vectors of a label are averaged, and the
    mean is renormalised.
    """
    x = np.asarray(text_vectors, np.float64)
    if x.ndim != 2 or n_templates < 1 or x.shape[0] % n_templates:
        raise InputError(f"need (C * K, D) text vectors with K = {n_templates}; got shape {x.shape}")
    x = l2_normalize(x, np.float64).reshape(x.shape[0] // n_templates, n_templates, x.shape[1]).mean(axis=1)
    return l2_normalize(x, np.float64).astype(np.float32)


def class_vectors(embed_text: Callable[[list[str]], np.ndarray], labels: Sequence[str],
                  templates: Sequence[str] = DEFAULT_TEMPLATES) -> np.ndarray:
    """``(C, D)`` float32 class vectors: :func:`ensemble` of ``embed_text(prompts(labels, templates))``.

    Args:
        embed_text: e.g. ``encoder.text_embeddings``; maps ``m`` strings to ``(m, D)`` vectors.
    """
    templates = list(templates)
    texts = prompts(labels, templates)
    step = max(PROMPTS_PER_CALL // len(templates), 1) * len(templates)  # whole labels per call
    chunks = [texts[i:i + step] for i in range(0, len(texts), step)]
    vectors = [np.asarray(embed_text(c)) for c in progress.bar(chunks, desc="class prompts", unit="batch")]
    return ensemble(np.concatenate(vectors), len(templates))


def zero_shot_scores(audio_vectors: np.ndarray, class_vecs: np.ndarray, *, logit_scale: float | None = None,
                     temperature: float | None = None) -> ZeroShotScores:
    """Cosine and softmax probabilities of ``(n, D)`` audio vectors against ``(C, D)`` classes.

    Both inputs are L2-normalised here (audio vectors usually are already). The softmax
    scale is ``logit_scale`` if given, else ``1 / temperature`` if given, else
    :data:`DEFAULT_LOGIT_SCALE`.

    Raises:
        InputError: mismatched dims, both scale and temperature, or a non-positive one.
    """
    a = np.atleast_2d(np.asarray(audio_vectors, np.float64))
    c = np.atleast_2d(np.asarray(class_vecs, np.float64))
    if a.ndim != 2 or c.ndim != 2 or a.shape[1] != c.shape[1]:
        raise InputError(
            f"audio vectors {a.shape} and class vectors {c.shape} need the same dim; "
            "embed text and audio with the same encoder and checkpoint"
        )
    if logit_scale is not None and temperature is not None:
        raise InputError(f"give logit_scale ({logit_scale}) or temperature ({temperature}), not both")
    scale = logit_scale if logit_scale is not None else (1.0 / temperature if temperature else DEFAULT_LOGIT_SCALE)
    if (temperature is not None and temperature <= 0) or not scale > 0:
        raise InputError(
            f"the softmax scale must be positive; got logit_scale={logit_scale}, temperature={temperature}"
        )
    cosine = l2_normalize(a, np.float64) @ l2_normalize(c, np.float64).T
    logits = cosine * scale
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return ZeroShotScores(cosine.astype(np.float32), p.astype(np.float32), float(scale))


def zero_shot_classify(scores: ZeroShotScores | np.ndarray, labels: Sequence[str],
                       k: int = 1) -> list[str] | list[list[str]]:
    """Predicted labels: the best class per file (``k == 1``), or the ``k`` best, best first.

    Ties go to the class listed first. ``scores`` is a :class:`ZeroShotScores` or an ``(n, C)`` array.
    """
    s = _matrix(scores, labels)
    if not 1 <= k <= s.shape[1]:
        raise InputError(f"k must lie in [1, {s.shape[1]}] (the number of labels); got {k}")
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    if k == 1:
        return [labels[i] for i in order[:, 0]]
    return [[labels[i] for i in row] for row in order]


def zero_shot_eval(scores: ZeroShotScores | np.ndarray, true_labels: Sequence[str],
                   labels: Sequence[str]) -> dict[str, float]:
    """Accuracy and mean average precision of zero-shot scores.

    Args:
        scores: :class:`ZeroShotScores` or ``(n, C)`` scores, higher is better.
        true_labels: ``n`` strings; several labels of one file are ``';'``-separated.
        labels: the ``C`` class names, in score column order.

    Returns:
        ``accuracy``: share of files whose top-1 class is one of their labels;
        ``map``: mean over classes with at least one positive file of the class's average
        precision (files ranked by score; tied scores count as one threshold, as
        ``sklearn.metrics.average_precision_score`` does); ``n``: files scored;
        ``classes``: classes in the mAP.

    Raises:
        InputError: a file without labels, or a label that is not a class.
    """
    s = _matrix(scores, labels)
    if len(true_labels) != s.shape[0]:
        raise InputError(f"{s.shape[0]} files scored but {len(true_labels)} true labels given")
    index = {lab: j for j, lab in enumerate(labels)}
    truth = np.zeros(s.shape, bool)
    unknown: set[str] = set()
    for i, entry in enumerate(true_labels):
        parts = [p.strip() for p in str(entry).split(LABEL_SEP) if p.strip()]
        if not parts:
            raise InputError(f"file {i} has no true label; label it or leave it out of the evaluation")
        for p in parts:
            if p in index:
                truth[i, index[p]] = True
            else:
                unknown.add(p)
    if unknown:
        raise InputError(f"true labels {sorted(unknown)[:10]} are not among the {len(labels)} classes "
                         f"(e.g. {list(labels)[:5]}); add them to the labels or fix their spelling")
    top = np.argsort(-s, axis=1, kind="stable")[:, 0]
    accuracy = float(truth[np.arange(len(top)), top].mean()) if len(top) else float("nan")
    aps = label_average_precisions(s, truth)  # NaN for a class no file carries
    scored = aps[np.isfinite(aps)]
    return {"accuracy": accuracy, "map": float(scored.mean()) if scored.size else float("nan"),
            "n": float(s.shape[0]), "classes": float(scored.size)}


def labels_in(truth: pd.Series, label_column: str) -> list[str]:
    """The classes named in a label column, sorted: its distinct values, multi-labels
    (:data:`LABEL_SEP`) split, blanks left out.

    Raises:
        InputError: the column holds no label.
    """
    labels = sorted({p.strip() for v in truth.dropna() for p in str(v).split(LABEL_SEP) if p.strip()})
    if not labels:
        raise InputError(f"column {label_column!r} holds no labels; pass --labels a,b,c")
    return labels


def prediction_table(paths: pd.Series, truth: pd.Series, labels: Sequence[str], scores: ZeroShotScores, *,
                     evaluate: bool = False) -> tuple[pd.DataFrame, dict[str, float] | None]:
    """Zero-shot predictions of ``n`` files as a table, and their quality against ``truth``.

    Args:
        paths: ``(n,)`` the files' paths.
        truth: ``(n,)`` the true labels (named after their column; NULL = unlabelled).
        labels: the ``C`` classes scored.
        scores: their :class:`ZeroShotScores`.
        evaluate: also score the labelled files (:func:`zero_shot_eval`).

    Returns:
        ``(predictions, metrics)``: one row per file (``path, predicted, probability``,
        the true label, one ``p:<class>`` column per class), and accuracy/mAP or None.
    """
    import pandas as pd

    labels = list(labels)
    best = scores.probs.argmax(axis=1)
    out = pd.DataFrame({"path": paths, "predicted": [labels[i] for i in best],
                        "probability": scores.probs[np.arange(len(best)), best], truth.name: truth})
    for j, lab in enumerate(labels):
        out[f"p:{lab}"] = scores.probs[:, j]
    metrics = None
    if evaluate:
        keep = truth.notna().to_numpy()
        metrics = zero_shot_eval(scores.cosine[keep], truth[keep].astype(str).tolist(), labels)
    return out, metrics


def _matrix(scores: ZeroShotScores | np.ndarray, labels: Sequence[str]) -> np.ndarray:
    s = np.asarray(scores.cosine if isinstance(scores, ZeroShotScores) else scores, np.float64)
    if s.ndim != 2 or s.shape[1] != len(labels):
        raise InputError(f"scores must be (n, {len(labels)}) for {len(labels)} labels; got shape {s.shape}")
    return s
