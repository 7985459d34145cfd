"""Search an index by vector: file-level hits (ranked by their best window) or window hits.

Results follow ``sentence_transformers.util.semantic_search``: best first, one row per
hit, with the score (cosine of post-processed unit vectors), the file's path, the
window's ``start_s`` / ``end_s`` and the file's label and metadata columns.

The same hits come three ways. The ``search_*`` functions return a DataFrame and keep the
window and file tables in memory (:meth:`Store.hit_tables`), for the Python API.
:func:`served_rows` returns plain rows looked up in those tables, turned once into numpy
columns and plain values (:mod:`retrieval.hit_table`), for a process that answers many
queries (``retrieve serve``). :func:`search_rows` returns plain rows and reads only its
hits' rows from DuckDB, without pandas: what one ``retrieve query`` needs, whose cold
start pandas alone would double.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.filters import Filter
from retrieval.hit_table import cached_query, file_queries, hit_table
from retrieval.hits import FileOf, first_per_file, hit_dicts, ranked_in, shown_columns
from retrieval.postprocess import l2_normalize
from retrieval.store import Store

if TYPE_CHECKING:
    import pandas as pd



def allowed_ids(store: Store, level: str, where: Filter | None) -> np.ndarray | None:
    """Vector ids whose file passes ``where``; None when there is no filter."""
    if where is None:
        return None
    return store.db.vector_ids(level, where.sql, where.params)


def search_windows(store: Store, query: np.ndarray, k: int, where: Filter | None = None) -> pd.DataFrame:
    """The ``k`` windows most similar to ``query`` (a ``(D,)`` post-processed unit vector)."""
    return _hits(store, *ranked(store, query, k, where, by_file=False, file_of=_cached_file_of(store)))


def search_segments(store: Store, query: np.ndarray, k: int, where: Filter | None = None) -> pd.DataFrame:
    """Deprecated name of :func:`search_windows` (:mod:`retrieval.legacy`)."""
    import warnings

    warnings.warn("search_segments is deprecated; use search_windows", DeprecationWarning, stacklevel=2)
    return search_windows(store, query, k, where)


def search_files(store: Store, query: np.ndarray, k: int, where: Filter | None = None) -> pd.DataFrame:
    """The ``k`` files whose best window is most similar to ``query``; each row names that window."""
    return _hits(store, *ranked(store, query, k, where, by_file=True, file_of=_cached_file_of(store)))


def search_rows(store: Store, query: np.ndarray, k: int, where: Filter | None = None, *,
                by_file: bool = True) -> list[dict[str, Any]]:
    """:func:`search_files` (or, ``by_file=False``, :func:`search_windows`) as plain rows, one
    dict per hit with the same keys and values as the DataFrame's records; no pandas."""
    ids, scores = ranked(store, query, k, where, by_file=by_file, file_of=store.db.files_of)
    return hit_rows(store, ids, scores)


def served_rows(store: Store, query: np.ndarray, k: int, where: Filter | None = None, *, by_file: bool = True,
                leave_out: int | None = None, spare: int = 0) -> list[dict[str, Any]]:
    """:func:`search_rows` from the tables kept in memory (:func:`retrieval.hit_table.hit_table`).

    ``leave_out``: a file id whose hits are dropped (the query's own file); ``spare``: how
    many more hits to ask for so that ``k`` are left after dropping them. Ranks count the
    rows returned.
    """
    table = hit_table(store)
    ids, scores = ranked(store, query, k + spare, where, by_file=by_file, file_of=table.files_of)
    if leave_out is not None:
        keep = table.files_of(ids) != leave_out
        ids, scores = ids[keep], scores[keep]
    return table.rows(ids[:k], scores[:k])


def ranked(store: Store, query: np.ndarray, k: int, where: Filter | None, *, by_file: bool,
           file_of: FileOf) -> tuple[np.ndarray, np.ndarray]:
    """:func:`retrieval.hits.ranked_in` over the store's window index, among the windows whose
    file passes ``where``."""
    return ranked_in(store.vectors("window"), query, k, allowed_ids(store, "window", where), by_file=by_file,
                     file_of=file_of)


def search_exact(store: Store, ids: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int,
                 where: Filter | None = None, *, by_file: bool = True) -> pd.DataFrame:
    """Brute-force search over given ``(n, D)`` unit ``vectors`` with DuckDB ``ids``.

    Used where the FAISS space does not fit the query: text queries against a centred or
    whitened index are scored against the raw (L2-normalised) window vectors, so their
    scores stay the encoder's own text-audio cosine.
    """
    allowed = allowed_ids(store, "window", where)
    scores = vectors @ np.asarray(query, np.float32)
    if allowed is not None:
        scores = np.where(np.isin(ids, allowed), scores, -np.inf)
    order = np.argsort(-scores, kind="stable")
    order = order[np.isfinite(scores[order])]
    if not by_file:
        order = order[:k]
        return _hits(store, ids[order], scores[order])
    file_of = _cached_file_of(store)
    head = order[: max(4 * k, k + 32)]
    first = first_per_file(file_of(ids[head]), k)
    if len(first) < k and len(order) > len(head):
        head = order
        first = first_per_file(file_of(ids[head]), k)
    return _hits(store, ids[head[first]], scores[head[first]])


def _cached_file_of(store: Store) -> FileOf:
    windows, _ = store.hit_tables()
    return lambda ids: windows["file_id"].loc[ids].to_numpy(np.int64)


def _hits(store: Store, ids: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    import pandas as pd

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
    extra = shown_columns(list(meta.columns))
    for c in extra:
        out[c] = meta[c].array  # keeps nullable integers integer (to_numpy() would make them float)
    if "root" in meta.columns and len(store.db.roots()) > 1:  # paths are relative to their root
        out.insert(3, "root", meta["root"].to_numpy())
    out["duration_s"] = meta["duration_s"].to_numpy()
    out["window_id"] = ids
    out["file_id"] = win["file_id"].to_numpy()
    return out


def _empty(store: Store) -> pd.DataFrame:
    import pandas as pd

    cols = ["rank", "score", "path", "start_s", "end_s"] + store.db.metadata_columns() + [
        "duration_s", "window_id", "file_id"]
    return pd.DataFrame({c: [] for c in cols})


def hit_rows(store: Store, ids: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
    """The rows :func:`_hits` makes, as dicts, read for these ``ids`` only (no pandas).

    Values are Python scalars; a NULL is None (the DataFrame holds ``pd.NA`` or NaN there).
    """
    if ids.size == 0:
        return []
    extra = shown_columns(store.db.file_columns())
    found = store.db.hit_rows(ids, ["path", "root", "duration_s", *extra])
    return hit_dicts(found, ids, scores, sample_rate=store.require_recipe().sample_rate, extra=extra,
                     multi_root=len(store.db.roots()) > 1)


def cached_indexed_query(store: Store, *, file_id: int | None = None,
                         window_id: int | None = None) -> tuple[np.ndarray, int, int]:
    """:func:`indexed_query`, kept per version of the store's vectors (the vector is read-only).

    A file's vector comes from the raw file vectors kept in memory
    (:func:`retrieval.hit_table.file_queries`) when they are, else from DuckDB.
    """
    def compute() -> tuple[np.ndarray, int, int]:
        in_memory = file_queries(store) if file_id is not None else None
        held = in_memory.get(file_id) if in_memory is not None else None  # type: ignore[arg-type]
        if held is not None:
            raw, n_windows = held
            vec = store.postprocess.apply(raw)[0].astype(np.float32)
            vec.setflags(write=False)
            return vec, int(file_id), n_windows  # type: ignore[arg-type]
        vec, own, n_windows = indexed_query(store, file_id=file_id, window_id=window_id)
        vec.setflags(write=False)
        return vec, own, n_windows

    return cached_query(store, ("indexed", file_id, window_id), compute)


def indexed_query(store: Store, *, file_id: int | None = None,
                  window_id: int | None = None) -> tuple[np.ndarray, int, int]:
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

    if (file_id is None) == (window_id is None):
        raise InputError("give exactly one of file_id and window_id")
    rows = store.db.file_vector_rows(file_id=file_id, window_id=window_id)
    windows = {r[0]: r[3] for r in rows if r[2] == "window"}
    own = int(rows[0][1]) if rows else None
    if window_id is not None:
        raw = np.array([windows[window_id]], np.float32) if window_id in windows else np.zeros((0, 0), np.float32)
        what = f"window {window_id}"
    else:
        raw = np.array([r[3] for r in rows if r[2] == "file"], np.float32)
        if not len(raw) and windows:  # pooling "none" keeps no file vectors
            raw = l2_normalize(np.array(list(windows.values()), np.float32)).mean(axis=0, keepdims=True)
        what = f"file {file_id}"
    if own is None or not len(raw):
        raise InputError(f"the index holds no vector for {what}; ids are in the `file_id` and `window_id` "
                         "of search results")
    n_windows = len(windows)
    return store.postprocess.apply(raw.astype(np.float32))[0].astype(np.float32), own, n_windows
