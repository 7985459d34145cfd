"""Re-rank search hits by a column (``retrieve query --rank-by score_T``).

The query's :data:`POOL_FACTOR` x k most similar hits (at least :data:`MIN_POOL`) are
sorted by the column, highest first (ties keep their similarity order), and the first k
kept: "of what sounds like this clip, what does the head score highest". A ``score_<target>``
column is the file's best window score on file hits and, on window hits (``--windows``),
the window's own score.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retrieval.errors import InputError
from retrieval.store import Store
from retrieval.store.labels import SCORE_PREFIX, LabelStore

POOL_FACTOR = 10
MIN_POOL = 100


def pool_size(k: int) -> int:
    """How many hits by similarity a ``--rank-by`` query re-ranks."""
    return max(POOL_FACTOR * k, MIN_POOL)


def rank_hits(store: Store, hits: pd.DataFrame, column: str, k: int, *, windows: bool) -> pd.DataFrame:
    """The ``k`` hits with the highest ``column``, re-numbered 1..k (NULLs last).

    Raises:
        InputError: ``column`` is not a column of the hits (lists the numeric ones).
    """
    hits = hits.copy()
    if windows and column.startswith(SCORE_PREFIX) and len(hits):
        ids, scores = LabelStore(store.db, store.root).scores(column[len(SCORE_PREFIX):])
        if len(ids):
            by_id = pd.Series(scores, index=ids)
            hits[column] = by_id.reindex(hits["window_id"].to_numpy()).to_numpy()
    if column not in hits.columns:
        numeric = [c for c in hits.columns if pd.api.types.is_numeric_dtype(hits[c]) and c not in ("rank",)]
        raise InputError(f"cannot rank by {column!r}: no such column; numeric columns: {', '.join(numeric)} "
                         "(score_<target> appears after `retrieve score --target <target>`)")
    values = pd.to_numeric(hits[column], errors="coerce").astype(float).to_numpy()
    order = np.lexsort((np.arange(len(hits)), np.where(np.isnan(values), np.inf, -values)))
    out = hits.iloc[order[:k]].reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    return out
