"""The Python API: ``Index.open(path)`` and the same calls the CLI makes.

    >>> from retrieval import Index
    >>> idx = Index.open("indexes/recordings")
    >>> idx.search("clip.wav", k=5)          # pandas DataFrame, best first
    >>> idx.embeddings(level="file")          # (DataFrame of metadata, (n, D) array)

Reading while an ingest runs: ``Index.open`` reads the last published snapshot when a
writer holds the index (see :mod:`retrieval.store.snapshot`). A long-running reader opens
with ``snapshot_only=True``, so it never blocks an ingest, and calls :meth:`Index.refresh`
between requests to move to a newer snapshot.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval import progress
from retrieval.audio.clip import clip_audio, silence_warning
from retrieval.configure import encoder_for
from retrieval.embed import embed_clip
from retrieval.encoders.base import Encoder, text_unsupported
from retrieval.encoders.registry import entry, text_encoders
from retrieval.errors import InputError
from retrieval.filters import compile_where
from retrieval.index_paths import DEFAULT_INDEXES, find_index, index_path_for, indexes_dir  # noqa: F401
from retrieval.legacy import level_name, renamed_keywords
from retrieval.options import LEVELS, ExportLevel, VectorKind, check_choice
from retrieval.pooling import group_means, lift
from retrieval.postprocess import l2_normalize
from retrieval.search import (
    cached_indexed_query,
    indexed_query,
    search_exact,
    search_files,
    search_rows,
    search_windows,
    served_rows,
)
from retrieval.store import Level, Store
from retrieval.store.db import SEVERITIES, Severity, pandas_of, vectors_of

if TYPE_CHECKING:
    import pandas as pd

    from retrieval.export import ExportSummary
    from retrieval.locate.options import LocateOptions

def _clip_hash(clip: str | Path | np.ndarray) -> str | None:
    """Content hash of a query file, as ingest stores it; None for arrays and non-regular files."""
    if isinstance(clip, np.ndarray) or not Path(clip).is_file():
        return None
    from retrieval.ingest import content_hash

    return content_hash(Path(clip))


class Index:
    """An opened index. Cheap to open; the encoder loads on the first query and stays warm."""

    def __init__(self, store: Store, device: str = "cpu") -> None:
        self.store = store
        self.recipe = store.require_recipe()
        self.device = device
        self._encoder: Encoder | None = None
        self._raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.last_ingest: Any = None

    @classmethod
    def build(cls, corpus: str | Path | Sequence[str | Path], path: str | Path | None = None, *,
              labels_csv: str | Path | None = None, labels_key: str | None = None, device: str = "cpu",
              **choices: Any) -> Index:
        """Index (or update the index of) ``corpus`` and open it: what ``retrieve index`` runs.

        ``corpus`` is one folder or several (each a root; paths are kept relative to it).
        ``choices`` are the fields of :class:`retrieval.configure.Choices` (``encoder``,
        ``model``, ``pooling``, ``postprocess``, ``window_s``, ...). The run's summary is
        kept as ``idx.last_ingest``.
        """
        from retrieval.configure import Choices
        from retrieval.ingest import IngestOptions, ingest

        roots = [Path(corpus)] if isinstance(corpus, (str, os.PathLike)) else [Path(c) for c in corpus]
        target = index_path_for(roots[0] if roots else Path("."), None if path is None else str(path))
        summary = ingest(roots, target, Choices(device=device, **choices),
                         IngestOptions(labels_csv=None if labels_csv is None else Path(labels_csv),
                                       labels_key=labels_key))
        idx = cls.open(target, device=device)
        idx.last_ingest = summary
        return idx

    @classmethod
    def open(cls, path: str | Path | None = None, *, device: str = "cpu", writable: bool = False,
             snapshot_only: bool = False) -> Index:
        """Open an index folder (or a name under ``indexes/``; None = the only one there).

        Reads the live database when no other process writes it, else the last published
        snapshot. ``snapshot_only=True`` (a server, a notebook left open) always reads a
        snapshot, so it never holds the live file and never blocks an ingest.
        """
        store = Store.open(find_index(None if path is None else str(path)), writable=writable,
                           snapshot_only=snapshot_only)
        return cls(store, device)

    def generation(self) -> str:
        """What this Index reads: ``snapshot <id>`` or ``live``; cheap to compare between calls."""
        return "live" if self.store.snapshot_id is None else f"snapshot {self.store.snapshot_id}"

    def refresh(self) -> bool:
        """Move to the newest published snapshot if there is a newer one; True when it reopened.

        One small file read when nothing changed. A request in flight keeps the store it
        started with only if it holds its own reference: call this between requests (or under
        the server's lock), so no request mixes two snapshots. The encoder stays loaded.
        """
        if not self.store.newer_snapshot():
            return False
        fresh = Store.open(self.store.root, snapshot_only=True)
        old, self.store = self.store, fresh
        self.recipe = fresh.require_recipe()
        self._raw.clear()
        old.close()
        return True

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        """Close; a writer leaving cleanly publishes what it changed first (:meth:`Store.__exit__`),
        so a server and other snapshot readers see labels, heads and scores set through it."""
        self.store.__exit__(exc_type, *exc)

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = encoder_for(self.recipe, self.device, index=self.store.root,
                                        corpus=self.store.db.get("corpus_root"))
        return self._encoder

    # -- queries ---------------------------------------------------------------------------

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Raw pooled ``(n, D)`` float32 vectors -> the searched space ``(n, D')`` float32: the
        index's post-processing, unit length."""
        return self.store.postprocess.apply(raw)

    def embed(self, clip: str | Path | np.ndarray, *, sample_rate: int | None = None,
              start_s: float | None = None, end_s: float | None = None) -> np.ndarray:
        """The ``(D,)`` search vector of a clip (path or mono array), as the index would store it."""
        audio = clip_audio(clip, self.recipe.sample_rate, sample_rate=sample_rate, start_s=start_s, end_s=end_s)
        r = self.recipe
        raw, _, _ = embed_clip(self.encoder, audio, r.window_samples, r.hop_samples, r.pooling)
        return self.store.postprocess.apply(raw[None])[0]

    @renamed_keywords
    def search(self, clip: str | Path | np.ndarray, k: int = 10, *, windows: bool = False,
               where: str | Sequence[str] | None = None, sample_rate: int | None = None,
               start_s: float | None = None, end_s: float | None = None, rank_by: str | None = None) -> pd.DataFrame:
        """Search by example. Files are ranked by their best window; ``windows=True`` returns windows.

        ``rank_by`` (e.g. ``score_rooster``) re-ranks the most similar hits by that column
        (:func:`retrieval.rank.rank_hits`). A silent clip still returns hits, with a warning in
        ``hits.attrs["warnings"]``.
        """
        vector, warnings = self._clip_query(clip, sample_rate, start_s, end_s)
        if rank_by:
            from retrieval.rank import pool_size, rank_hits

            hits = self.search_vector(vector, pool_size(k), windows=windows, where=where)
            hits = rank_hits(self.store, hits, rank_by, k, windows=windows)
        else:
            hits = self.search_vector(vector, k, windows=windows, where=where)
        hits.attrs["warnings"] = warnings
        return hits

    @renamed_keywords
    def search_rows(self, clip: str | Path | np.ndarray, k: int = 10, *, windows: bool = False,
                    where: str | Sequence[str] | None = None, sample_rate: int | None = None,
                    start_s: float | None = None, end_s: float | None = None) -> tuple[list[dict[str, Any]], list[str]]:
        """:meth:`search` as ``(rows, warnings)``: one dict per hit, with the DataFrame's columns.

        Reads only the hits' rows from DuckDB and never imports pandas: what a one-off
        search (``retrieve query``) needs. :meth:`search` keeps the tables in memory instead,
        which pays off from the second query on.
        """
        if k < 1:
            raise InputError(f"k must be at least 1; got {k}")
        vector, warnings = self._clip_query(clip, sample_rate, start_s, end_s)
        flt = compile_where(where, self.store.db.column_types())
        return search_rows(self.store, vector, k, flt, by_file=not windows), warnings

    def _clip_query(self, clip: str | Path | np.ndarray, sample_rate: int | None, start_s: float | None,
                    end_s: float | None) -> tuple[np.ndarray, list[str]]:
        """The search vector of ``clip`` (``(D,)`` float32) and its warnings (a silent clip)."""
        r = self.recipe
        audio = clip_audio(clip, r.sample_rate, sample_rate=sample_rate, start_s=start_s, end_s=end_s)
        vector = np.asarray(self.embed(audio, sample_rate=r.sample_rate), np.float32)
        warning = silence_warning(audio, r.window_samples, r.hop_samples, r.silence_db)
        return vector, [warning] if warning else []

    @renamed_keywords
    def search_text(self, text: str, k: int = 10, *, windows: bool = False,
                    where: str | Sequence[str] | None = None) -> pd.DataFrame:
        """Search by a text description; needs an encoder with a text tower (CLAP).

        Scores are the encoder's own text-audio cosine. On an index with ``center`` or
        ``whiten`` post-processing (fitted on audio only, which would move audio away
        from text) the query is scored exactly against the raw window vectors instead.
        """
        vec = self.text_vector(text)
        if self.recipe.postprocess == "none":
            return self.search_vector(vec, k, windows=windows, where=where)
        if k < 1:
            raise InputError(f"k must be at least 1; got {k}")
        ids, raw = self._raw_unit("window")
        flt = compile_where(where, self.store.db.column_types())
        return search_exact(self.store, ids, raw, vec, k, flt, by_file=not windows)

    def text_vector(self, text: str | Sequence[str]) -> np.ndarray:
        """Unit text embedding(s) lifted into the pooled space (raw, not post-processed): ``(D,)`` or ``(n, D)``.

        Raises:
            EncoderError: the index's encoder has no text tower (names the ones that do).
        """
        if not entry(self.recipe.encoder).has_text:
            raise text_unsupported(self.recipe.encoder, text_encoders())
        texts = [text] if isinstance(text, str) else list(text)
        out = l2_normalize(lift(self.encoder.text_embeddings(texts), self.recipe.pooling))
        return out[0] if isinstance(text, str) else out

    def _raw_unit(self, level: Level) -> tuple[np.ndarray, np.ndarray]:
        """Cached ``(ids, L2-normalised raw vectors)`` of ``level`` for exact raw-space scoring."""
        if level not in self._raw:
            ids, raw = self.store.db.vectors(level, self.recipe.dim)
            self._raw[level] = (ids, l2_normalize(raw))
        return self._raw[level]

    def zero_shot(self, labels: Sequence[str] | None = None, *, label_column: str = "label",
                  templates: Sequence[str] | None = None,
                  evaluate: bool = False) -> tuple[pd.DataFrame, dict[str, float] | None]:
        """Zero-shot classification of every indexed file with a text-audio encoder.

        Args:
            labels: class names; None takes the distinct values of ``label_column``
                (``;``-separated multi-labels are split).
            label_column: metadata column holding the true labels (for ``evaluate``).
            templates: prompt templates with ``{label}``; default :data:`zeroshot.DEFAULT_TEMPLATES`.
            evaluate: also score the predictions against ``label_column``.

        Returns:
            ``(predictions, metrics)``: one row per file (path, predicted, probability, the
            true label, and one ``p:<class>`` column per class), and accuracy/mAP or None.
        """
        from retrieval import zeroshot

        meta, vecs = self._file_vectors_raw()
        if label_column not in meta.columns:
            raise InputError(f"no metadata column {label_column!r}; columns: {', '.join(self.store.db.metadata_columns())}")
        truth = meta[label_column]
        labels = zeroshot.labels_in(truth, label_column) if labels is None else list(labels)
        classes = zeroshot.class_vectors(self.text_vector, labels, templates or zeroshot.DEFAULT_TEMPLATES)
        scores = zeroshot.zero_shot_scores(vecs, classes, logit_scale=getattr(self.encoder, "logit_scale", None))
        return zeroshot.prediction_table(meta["path"], truth, labels, scores, evaluate=evaluate)

    def classify(self, clips: str | Path | np.ndarray | Sequence[str | Path], k: int = 10, *,
                 label_column: str = "label", weighting: str = "similarity", sample_rate: int | None = None,
                 where: str | Sequence[str] | None = None, include_self: bool = False) -> pd.DataFrame:
        """kNN label transfer: label clips by a similarity-weighted vote of their ``k`` nearest files.

        Args:
            clips: a path, a folder (every audio file in it), a list of paths, or one mono
                array (with ``sample_rate``).
            label_column: metadata column whose values are transferred (``a;b`` = multi-label).
            where: restrict the voters to files passing a metadata filter.
            include_self: let a clip that is itself in the index vote for itself. By
                default every indexed file with the same content (blake2b of the bytes, so
                a copy at another path too) is left out of that clip's vote, as in
                ``evaluate``'s leave-one-out; otherwise its own vector (similarity 1.0)
                would decide the label.

        Returns:
            One row per clip: ``clip, predicted, confidence, votes`` (label -> weight) ``,
            scores`` (label -> weighted share), ``neighbours`` (list of ``(path, similarity,
            label)``), ``excluded_self`` (indexed files with the clip's content left out of
            its vote; 0 with ``include_self``), and ``error`` for clips that could not be read.
        """
        import pandas as pd

        from retrieval.audio.discover import audio_clips
        from retrieval.audio.paths import to_stored
        from retrieval.errors import AudioError
        from retrieval.knn import classify as knn_classify, split_label

        items: list[Any] = [clips] if isinstance(clips, np.ndarray) else audio_clips(clips)
        meta, gallery = self._gallery(label_column, where)
        labels = meta[label_column].tolist()
        gallery_keys = None if include_self else self._content_hashes(meta["file_id"])
        rows, queries, query_keys = [], [], []
        for item in progress.bar(items, desc="classifying", unit="clip"):
            name = "<array>" if isinstance(item, np.ndarray) else to_stored(str(item))  # valid UTF-8
            try:
                queries.append(self.embed(item, sample_rate=sample_rate))
                rows.append({"clip": name, "error": None})
                query_keys.append(None if include_self else _clip_hash(item))
            except (AudioError, InputError) as exc:
                rows.append({"clip": name, "error": str(exc)})
        good = [r for r in rows if r["error"] is None]
        preds = knn_classify(np.stack(queries), gallery, labels, k, weighting=weighting,
                             query_ids=None if include_self else query_keys,
                             gallery_ids=gallery_keys) if queries else []
        labelled_keys = pd.Series([h for h, lab in zip(gallery_keys or [], labels) if split_label(lab)],
                                  dtype=object).value_counts()
        paths = meta["path"].tolist()
        for r, p, key in zip(good, preds, query_keys):
            r.update(predicted=p.label, confidence=p.confidence, votes=p.votes, scores=p.scores,
                     neighbours=[(paths[i], sim, labels[i]) for i, sim in p.neighbours],
                     excluded_self=int(labelled_keys.get(key, 0)) if key is not None else 0)
        return pd.DataFrame(rows, columns=["clip", "predicted", "confidence", "votes", "scores", "neighbours",
                                           "excluded_self", "error"])

    def _content_hashes(self, file_ids: pd.Series) -> list[str | None]:
        """The stored content hash of each file id (None for an id not in ``files``)."""
        by_id = {fid: digest for fid, _, _, digest in self.store.db.known_files().values()}
        return [by_id.get(fid) for fid in file_ids]

    def evaluate(self, label_column: str = "label", group_column: str | None = None, ks: Sequence[int] = (1, 5, 10),
                 *, level: Level = "file", probe: bool = False, where: str | Sequence[str] | None = None,
                 weighting: str = "similarity", report_dir: str | Path | None = None) -> Any:
        """Leave-one-out nearest-neighbour quality on the stored labels (``retrieval.evaluate``).

        Neighbours from the same file never count, nor, with ``group_column``, neighbours
        from the same group (speaker, recording, site). ``probe=True`` adds a linear probe
        with group-aware cross-validation to ``result.metrics`` (``probe_accuracy``, ...).
        ``report_dir`` also writes ``report.md`` with its plots there (``retrieval.report``),
        from the vectors just evaluated.

        Returns:
            :class:`retrieval.evaluate.EvalResult`, with item ids = ``path`` (file level) or
            ``path@start_s`` (window level), so results of indexes built from the same
            corpus line up for :func:`retrieval.compare.compare`.
        """
        from retrieval.evaluate import evaluate as run_evaluate

        level = level_name(level)  # type: ignore[assignment]
        check_choice("level", level, LEVELS)
        meta, vecs = self._gallery(label_column, where, level=level, group_column=group_column)
        groups = meta[group_column].tolist() if group_column else None
        paths = meta["path"] if len(self.store.db.roots()) < 2 else meta["root"] + "/" + meta["path"]  # unique
        item_ids = paths if level == "file" else paths + "@" + meta["start_s"].round(3).astype(str)
        result = run_evaluate(vecs, meta[label_column].tolist(), meta["file_id"].tolist(), groups, ks,
                              weighting=weighting, item_ids=item_ids.tolist())
        result.settings.update({"index": str(self.store.root), "label_column": label_column,
                                "group_column": group_column, "level": level, "encoder": self.recipe.encoder,
                                "pooling": self.recipe.pooling, "postprocess": self.recipe.postprocess})
        if probe:
            from retrieval.probe import linear_probe

            result.metrics.update(linear_probe(vecs, meta[label_column].tolist(), groups).metrics())
        if report_dir is not None:
            from retrieval.report import write_report

            r = self.recipe
            write_report(result, vecs, meta[label_column].tolist(), Path(report_dir),
                         title=f"{r.encoder} / {r.pooling} / {r.postprocess} on {label_column}")
        return result

    def _gallery(self, label_column: str, where: str | Sequence[str] | None, *, level: Level = "file",
                 group_column: str | None = None) -> tuple[pd.DataFrame, np.ndarray]:
        """Labelled vectors of ``level`` (file level falls back to per-file window means)."""
        columns = self.store.db.metadata_columns()
        for col in (label_column, group_column):
            if col is not None and col not in columns:
                raise InputError(f"no metadata column {col!r}; columns: {', '.join(columns)} "
                                 "(attach more with `retrieve index CORPUS --labels labels.csv`)")
        meta, vecs = self.embeddings(level, where=where)
        if level == "file" and not len(meta) and self.recipe.pooling == "none":
            meta, raw = self._file_vectors_raw()
            vecs = self.store.postprocess.apply(raw)
        if not len(meta):
            raise InputError(f"the index holds no {level} vectors" + (" matching the filter" if where else ""))
        return meta.reset_index(drop=True), vecs

    def _file_vectors_raw(self) -> tuple[pd.DataFrame, np.ndarray]:
        """One raw unit vector per file: the file vectors, or the mean of window vectors
        when the pooling keeps none."""
        meta, vecs = self.embeddings("file", processed=False)
        if len(meta):
            return meta, l2_normalize(vecs)
        meta, vecs = self.embeddings("window", processed=False)
        first, means = group_means(vecs, meta["file_id"].to_numpy())
        return meta.iloc[first].reset_index(drop=True), means

    @renamed_keywords
    def search_vector(self, vector: np.ndarray, k: int = 10, *, windows: bool = False,
                      where: str | Sequence[str] | None = None) -> pd.DataFrame:
        """Search with a ready ``(D,)`` unit vector in the index's space."""
        if k < 1:
            raise InputError(f"k must be at least 1; got {k}")
        flt = compile_where(where, self.store.db.column_types())
        fn = search_windows if windows else search_files
        return fn(self.store, np.asarray(vector, np.float32), k, flt)

    @renamed_keywords
    def search_indexed(self, k: int = 10, *, file_id: int | None = None, window_id: int | None = None,
                       windows: bool = False, where: str | Sequence[str] | None = None,
                       include_self: bool = False) -> pd.DataFrame:
        """"More like this": search with the stored vector of an indexed file or window.

        No audio is decoded or embedded. The query's own file is left out of the hits
        unless ``include_self``. Rows are those of :meth:`search`.
        """
        vec, own, n_windows = indexed_query(self.store, file_id=file_id, window_id=window_id)
        if include_self:
            return self.search_vector(vec, k, windows=windows, where=where)
        hits = self.search_vector(vec, k + (n_windows if windows else 1), windows=windows, where=where)
        hits = hits[hits["file_id"] != own].head(k).reset_index(drop=True)
        hits["rank"] = np.arange(1, len(hits) + 1)
        return hits

    @renamed_keywords
    def search_vector_rows(self, vector: np.ndarray, k: int = 10, *, windows: bool = False,
                           where: str | Sequence[str] | None = None) -> list[dict[str, Any]]:
        """:meth:`search_vector` as plain rows (the DataFrame's records, cleaned), looked up in
        tables kept in memory: what a server answering many queries needs."""
        if k < 1:
            raise InputError(f"k must be at least 1; got {k}")
        flt = compile_where(where, self.store.db.column_types())
        return served_rows(self.store, np.asarray(vector, np.float32), k, flt, by_file=not windows)

    @renamed_keywords
    def search_indexed_rows(self, k: int = 10, *, file_id: int | None = None, window_id: int | None = None,
                            windows: bool = False, where: str | Sequence[str] | None = None,
                            include_self: bool = False) -> list[dict[str, Any]]:
        """:meth:`search_indexed` as plain rows (see :meth:`search_vector_rows`); the query
        vector is kept while the index's vectors stay the same."""
        if k < 1:
            raise InputError(f"k must be at least 1; got {k}")
        vec, own, n_windows = cached_indexed_query(self.store, file_id=file_id, window_id=window_id)
        flt = compile_where(where, self.store.db.column_types())
        if include_self:
            return served_rows(self.store, vec, k, flt, by_file=not windows)
        return served_rows(self.store, vec, k, flt, by_file=not windows, leave_out=own,
                           spare=n_windows if windows else 1)

    # -- data access -----------------------------------------------------------------------

    def embeddings(self, level: Level = "file", *, processed: bool = True,
                   where: str | Sequence[str] | None = None) -> tuple[pd.DataFrame, np.ndarray]:
        """All vectors of ``level`` with their metadata.

        Returns:
            ``(meta, vectors)``: one metadata row per vector (path, start_s, end_s, label
            columns, ids) and ``(n, D)`` float32 vectors, post-processed and unit length
            unless ``processed=False`` (then the raw pooled vectors).
        """
        r = self.recipe
        level = level_name(level)  # type: ignore[assignment]
        flt = compile_where(where, self.store.db.column_types())
        tbl = self.store.db.vector_rows(level, flt.sql if flt else "", flt.params if flt else ())
        raw = vectors_of(tbl, "vector", r.dim)
        meta = pandas_of(tbl.drop(["vector"]))
        meta.insert(1, "start_s", meta.pop("start_sample") / r.sample_rate)
        meta.insert(2, "end_s", meta.pop("end_sample") / r.sample_rate)
        vecs = self.store.postprocess.apply(raw) if processed and len(raw) else raw
        return meta, vecs

    def files(self) -> pd.DataFrame:
        return pandas_of(self.store.db.files_table(by_path=True))

    def errors(self, severity: Severity | None = None) -> pd.DataFrame:
        """Files that failed (``error``) or went in with a caveat (``warning``), by path.

        Columns: ``path, severity, stage, reason, size, mtime, recorded_at``; ``severity``
        keeps one kind only.

        Raises:
            InputError: a severity other than those in :data:`SEVERITIES`.
        """
        if severity is not None:
            check_choice("severity", severity, SEVERITIES)
        table = self.store.db.errors_table().to_pandas()
        return table if severity is None else table[table.severity == severity].reset_index(drop=True)

    def info(self) -> dict[str, Any]:
        return self.store.info()

    def export(self, out: str | Path, *, vectors: VectorKind = "searched",
               level: ExportLevel = "both") -> ExportSummary:
        """Write one Parquet row per vector to ``out``: ``vectors`` ``searched`` (post-processed,
        unit length) or ``raw`` (pooled, as stored), ``level`` ``file``, ``window`` or ``both``.

        Returns:
            :class:`retrieval.export.ExportSummary` (``.rows`` = rows written).
        """
        from retrieval.export import export_vectors

        return export_vectors(self, out, vectors=vectors, level=level_name(level))  # type: ignore[arg-type]

    def few_shot(self, label_column: str = "label", group_column: str | None = None,
                 shots: Sequence[int] = (1, 2, 4, 8, 16, 32), *, draws: int = 5, level: Level = "file",
                 where: str | Sequence[str] | None = None, weak_negatives: float = 0.1, seed: int = 0) -> Any:
        """Few-shot learning curves (head vs prototypes vs kNN) on the stored labels:
        :func:`retrieval.fewshot.few_shot` on this index's search vectors."""
        from retrieval.fewshot import few_shot

        level = level_name(level)  # type: ignore[assignment]
        meta, vecs = self._gallery(label_column, where, level=level, group_column=group_column)
        result = few_shot(vecs, meta[label_column].tolist(), meta[group_column].tolist() if group_column else None,
                          shots, draws=draws, weak_negatives=weak_negatives, seed=seed)
        result.settings.update({"index": str(self.store.root), "label_column": label_column,
                                "group_column": group_column, "level": level})
        return result

    # -- adaptation ------------------------------------------------------------------------

    def adapter(self) -> Any:
        """Labels, heads, window scores and suggestions of this index (:class:`retrieval.adapt.Adapter`).
        Labels go to the index's ``labels.sqlite`` from any open index; training and scoring write
        ``meta.duckdb``: open the index with ``writable=True``."""
        from retrieval.adapt import Adapter

        return Adapter(self.store)

    def finetune(self, targets: str | Sequence[str], blocks: int, **options: Any) -> dict:
        """Fine-tune the last ``blocks`` transformer blocks of this index's encoder on its window labels
        (:meth:`retrieval.adapt.Adapter.finetune`); returns the summary with the new ``model`` and ``command``."""
        return self.adapter().finetune([targets] if isinstance(targets, str) else list(targets), blocks, **options)

    # -- localisation ----------------------------------------------------------------------

    def locate(self, query: str | Path | np.ndarray | None, long_file: str | Path,
               options: LocateOptions | None = None, **changes: Any) -> pd.DataFrame:
        """Where ``query`` (a clip; or None with ``text=...``) occurs in ``long_file``, with this index's recipe.

        The encoder, window, hop, pooling and post-processing are the index's; the long file
        need not be indexed. ``options`` (:class:`retrieval.locate.LocateOptions`, or its
        fields as keywords) and the returned events DataFrame (``start_s``, ``end_s``,
        ``duration_s``, ``peak_s``, ``peak_score``, ``mean_score``) are those of
        :func:`retrieval.locate.locate_with_index`.
        """
        from retrieval.locate import locate_with_index

        return locate_with_index(self, query, long_file, options, **changes)
