"""Search an index by vector: file-level hits (ranked by their best window) or window hits.

Results follow ``sentence_transformers.util.semantic_search``: best first, one row per
hit, with the score (cosine of post-processed unit vectors), the file's path, the
window's ``start_s`` / ``end_s`` and the file's label and metadata columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retrieval.filters import Filter
from retrieval.postprocess import l2_normalize
from retrieval.store import Store

#: Hidden columns of ``files`` not shown in results.
_HIDDEN = {"content_hash", "size", "mtime", "format", "indexed_at", "n_samples", "status", "n_segments",
           "sample_rate", "channels", "root"}


def allowed_ids(store: Store, level: str, where: Filter | None) -> np.ndarray | None:
    """Vector ids whose file passes ``where``; None when there is no filter."""
    if where is None:
        return None
    return store.db.vector_ids(level, where.sql, where.params)


def search_segments(store: Store, query: np.ndarray, k: int, where: Filter | None = None) -> pd.DataFrame:
    """The ``k`` windows most similar to ``query`` (a ``(D,)`` post-processed unit vector)."""
    allowed = allowed_ids(store, "segment", where)
    if allowed is not None and allowed.size == 0:
        return _empty(store)
    scores, ids = store.vectors("segment").search(query[None], k, allowed)
    keep = ids[0] >= 0
    return _hits(store, ids[0][keep], scores[0][keep])


def search_files(store: Store, query: np.ndarray, k: int, where: Filter | None = None) -> pd.DataFrame:
    """The ``k`` files whose best window is most similar to ``query``; each row names that window."""
    vi = store.vectors("segment")
    allowed = allowed_ids(store, "segment", where)
    if vi.ntotal == 0 or (allowed is not None and allowed.size == 0):
        return _empty(store)
    limit = vi.ntotal if allowed is None else allowed.size
    fetch = min(limit, max(4 * k, k + 32))
    while True:
        scores, ids = vi.search(query[None], fetch, allowed)
        keep = ids[0] >= 0
        out = _top_files(_hits(store, ids[0][keep], scores[0][keep]), k)
        if len(out) >= k or fetch >= limit:
            return out
        fetch = min(limit, fetch * 4)


def search_exact(store: Store, ids: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int,
                 where: Filter | None = None, *, by_file: bool = True) -> pd.DataFrame:
    """Brute-force search over given ``(n, D)`` unit ``vectors`` with DuckDB ``ids``.

    Used where the FAISS space does not fit the query: text queries against a centred or
    whitened index are scored against the raw (L2-normalised) window vectors, so their
    scores stay the encoder's own text-audio cosine.
    """
    allowed = allowed_ids(store, "segment", where)
    scores = vectors @ np.asarray(query, np.float32)
    if allowed is not None:
        scores = np.where(np.isin(ids, allowed), scores, -np.inf)
    order = np.argsort(-scores, kind="stable")
    order = order[np.isfinite(scores[order])]
    if not by_file:
        order = order[:k]
        return _hits(store, ids[order], scores[order])
    head = order[: max(4 * k, k + 32)]
    out = _top_files(_hits(store, ids[head], scores[head]), k)
    if len(out) < k and len(order) > len(head):
        out = _top_files(_hits(store, ids[order], scores[order]), k)
    return out


def _top_files(hits: pd.DataFrame, k: int) -> pd.DataFrame:
    """The first ``k`` files of best-first window ``hits``, each with its best window, ranked 1..n."""
    out = hits.drop_duplicates("path", keep="first").head(k).reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    return out


def _hits(store: Store, ids: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    if ids.size == 0:
        return _empty(store)
    sr = store.require_recipe().sample_rate
    windows, files = store.hit_tables()
    win = windows.loc[ids]
    meta = files.loc[win["file_id"].to_numpy()]
    out = pd.DataFrame({
        "rank": np.arange(1, len(ids) + 1),
        "score": scores.astype(float),
        "path": meta["path"].to_numpy(),
        "start_s": win["start_sample"].to_numpy() / sr,
        "end_s": win["end_sample"].to_numpy() / sr,
    })
    extra = [c for c in meta.columns if c not in _HIDDEN and c not in out.columns and c != "duration_s"]
    for c in extra:
        out[c] = meta[c].array  # keeps nullable integers integer (to_numpy() would make them float)
    if "root" in meta.columns and len(store.db.roots()) > 1:  # paths are relative to their root
        out.insert(3, "root", meta["root"].to_numpy())
    out["duration_s"] = meta["duration_s"].to_numpy()
    out["segment_id"] = ids
    out["file_id"] = win["file_id"].to_numpy()
    return out


def _empty(store: Store) -> pd.DataFrame:
    cols = ["rank", "score", "path", "start_s", "end_s"] + store.db.metadata_columns() + [
        "duration_s", "segment_id", "file_id"]
    return pd.DataFrame({c: [] for c in cols})



def indexed_query(store: Store, *, file_id: int | None = None,
                  segment_id: int | None = None) -> tuple[np.ndarray, int, int]:
    """The search vector of an indexed file or window, as a query would have it.

    A file gives its file vector (or, with pooling ``none``, the mean of its window
    vectors); a window gives its own. Both are post-processed and unit length, like
    :meth:`retrieval.index.Index.embed` of the same audio.

    Returns:
        ``(vector (D,) float32, the file's id, how many windows that file has)``.

    Raises:
        InputError: neither or both ids, or an id the index holds no vector for.
    """
    from retrieval.errors import InputError

    if (file_id is None) == (segment_id is None):
        raise InputError("give exactly one of file_id and segment_id")
    rows = store.db.file_vector_rows(file_id=file_id, segment_id=segment_id)
    windows = {r[0]: r[3] for r in rows if r[2] == "segment"}
    own = int(rows[0][1]) if rows else None
    if segment_id is not None:
        raw = np.array([windows[segment_id]], np.float32) if segment_id in windows else np.zeros((0, 0), np.float32)
        what = f"window {segment_id}"
    else:
        raw = np.array([r[3] for r in rows if r[2] == "file"], np.float32)
        if not len(raw) and windows:  # pooling "none" keeps no file vectors
            raw = l2_normalize(np.array(list(windows.values()), np.float32)).mean(axis=0, keepdims=True)
        what = f"file {file_id}"
    if own is None or not len(raw):
        raise InputError(f"the index holds no vector for {what}; ids are in the `file_id` and `segment_id` "
                         "of search results")
    n_windows = len(windows)
    return store.postprocess.apply(raw.astype(np.float32))[0].astype(np.float32), own, n_windows
