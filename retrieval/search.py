"""Search an index by vector: file-level hits (ranked by their best window) or window hits.

Results follow ``sentence_transformers.util.semantic_search``: best first, one row per
hit, with the score (cosine of post-processed unit vectors), the file's path, the
window's ``start_s`` / ``end_s`` and the file's label and metadata columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrieval.filters import Filter
from retrieval.postprocess import l2_normalize
from retrieval.store import Store
from retrieval.store.db import arrow_of, pandas_of

#: Hidden columns of ``files`` not shown in results.
_HIDDEN = {"content_hash", "size", "mtime", "format", "indexed_at", "n_samples", "status", "n_segments",
           "sample_rate", "channels", "root"}


def allowed_ids(store: Store, level: str, where: Filter | None) -> np.ndarray | None:
    """Vector ids whose file passes ``where``; None when there is no filter."""
    if where is None:
        return None
    rows = store.db.con.execute(
        "SELECT s.segment_id FROM segments s JOIN files f USING (file_id) "
        f"WHERE s.level = ? AND s.vector IS NOT NULL AND ({where.sql})", [level, *where.params]).fetchall()
    return np.array([r[0] for r in rows], np.int64)


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
        first = _first_of_each_file(store, ids[0][keep], k)
        if len(first) >= k or fetch >= limit:
            return _hits(store, ids[0][keep][first], scores[0][keep][first]) if len(first) else _top_files(
                _empty(store), k)
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


@dataclass(frozen=True)
class _Lookup:
    """What a hit needs to know about every window, as arrays (no pandas on the per-query path).

    Attributes:
        segment_ids: ``(n,)`` int64 window ids with a vector, ascending.
        file_id: ``(n,)`` each window's file id.
        file_row: ``(n,)`` int64 row in ``files`` of each window's file (-1: no such file).
        start_sample, end_sample: ``(n,)`` int64 each window's span, samples.
        files: the ``files`` table (without ``content_hash``), indexed by ``file_id``.
        path_code: ``(len(files),)`` int64, equal for rows with equal ``path``.
    """

    segment_ids: np.ndarray
    file_id: np.ndarray
    file_row: np.ndarray
    start_sample: np.ndarray
    end_sample: np.ndarray
    files: pd.DataFrame
    path_code: np.ndarray

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Positions of window ``ids`` in the arrays above.

        Raises:
            StoreError: an id with no stored window (FAISS out of step with DuckDB).
        """
        pos = np.minimum(np.searchsorted(self.segment_ids, ids), max(len(self.segment_ids) - 1, 0))
        if not len(self.segment_ids) or not np.array_equal(self.segment_ids[pos], ids) or (
                self.file_row[pos] < 0).any():
            from retrieval.errors import StoreError

            raise StoreError("the vector index names windows the database does not hold; "
                             "run `retrieve repair` (or re-run `retrieve index`) to rebuild it")
        return pos


def _metadata(store: Store) -> _Lookup:
    """Every window's file and span, and the ``files`` table, cached on the store.

    Looking hits up in DuckDB costs a scan of ``segments`` per query (10-40 ms at 100k
    windows); the cache is rebuilt when the vectors (``generation``) or the metadata
    (``metadata_version``) change, also when another process changed them.
    """
    key = (store.db.get("generation"), store.db.get("metadata_version"))
    cached = getattr(store, "_search_metadata", None)
    if cached is None or cached[0] != key:
        con = store.db.con
        windows = arrow_of(con.sql("SELECT segment_id, file_id, start_sample, end_sample FROM segments "
                                   "WHERE vector IS NOT NULL ORDER BY segment_id")).to_pandas()
        files = pandas_of(arrow_of(con.sql("SELECT * EXCLUDE (content_hash) FROM files"))).set_index("file_id")
        lookup = _Lookup(segment_ids=windows["segment_id"].to_numpy(np.int64), file_id=windows["file_id"].to_numpy(),
                         file_row=files.index.get_indexer(windows["file_id"]).astype(np.int64),
                         start_sample=windows["start_sample"].to_numpy(np.int64),
                         end_sample=windows["end_sample"].to_numpy(np.int64),
                         files=files, path_code=pd.factorize(files["path"])[0].astype(np.int64))
        cached = (key, lookup)
        store._search_metadata = cached  # type: ignore[attr-defined]
    return cached[1]


def _first_of_each_file(store: Store, ids: np.ndarray, k: int) -> np.ndarray:
    """Positions in best-first window ``ids`` of each file's first (best) window, the first ``k`` files.

    Files are told apart by ``path``, as :func:`_top_files` does.
    """
    if ids.size == 0:
        return np.zeros(0, np.int64)
    lookup = _metadata(store)
    codes = lookup.path_code[lookup.file_row[lookup.positions(ids)]]
    _, first = np.unique(codes, return_index=True)
    return np.sort(first)[:k]


def _hits(store: Store, ids: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    if ids.size == 0:
        return _empty(store)
    sr = store.require_recipe().sample_rate
    lookup = _metadata(store)
    pos = lookup.positions(ids)
    meta = lookup.files.iloc[lookup.file_row[pos]]
    columns = {
        "rank": np.arange(1, len(ids) + 1),
        "score": scores.astype(float),
        "path": meta["path"].to_numpy(),
        "start_s": lookup.start_sample[pos] / sr,
        "end_s": lookup.end_sample[pos] / sr,
    }
    for c in meta.columns:
        if c not in _HIDDEN and c not in columns and c != "duration_s":
            columns[c] = meta[c].array  # keeps nullable integers integer (to_numpy() would make them float)
    out = pd.DataFrame(columns, index=pd.RangeIndex(len(ids)))
    if "root" in meta.columns and len(store.db.roots()) > 1:  # paths are relative to their root
        out.insert(3, "root", meta["root"].to_numpy())
    out["duration_s"] = meta["duration_s"].to_numpy()
    out["segment_id"] = ids
    out["file_id"] = lookup.file_id[pos]
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
    owner = "?" if file_id is not None else "(SELECT file_id FROM segments WHERE segment_id = ? AND level = 'segment')"
    rows = store.db.con.execute(  # the file's vector and window vectors in one pass (rows are stored by file)
        f"SELECT segment_id, file_id, level, vector FROM segments WHERE file_id = {owner} AND vector IS NOT NULL",
        [int(file_id if file_id is not None else segment_id)]).fetchall()  # type: ignore[arg-type]
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
