"""The Python API: ``Index.open(path)`` and the same calls the CLI makes.

    >>> from retrieval import Index
    >>> idx = Index.open("indexes/recordings")
    >>> idx.search("clip.wav", k=5)          # pandas DataFrame, best first
    >>> idx.embeddings(level="file")          # (DataFrame of metadata, (n, D) array)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retrieval.audio.decode import load
from retrieval.configure import encoder_for
from retrieval.embed import embed_clip
from retrieval.encoders.base import Encoder
from retrieval.errors import IndexNotFoundError, InputError
from retrieval.filters import compile_where
from retrieval.pooling import lift
from retrieval.search import search_files, search_segments
from retrieval.store import Level, Store
from retrieval.store.db import arrow_of, vectors_of

#: Folder of indexes when ``--index`` names no path (override with ``RETRIEVE_INDEXES``).
DEFAULT_INDEXES = "indexes"


def indexes_dir() -> Path:
    return Path(os.environ.get("RETRIEVE_INDEXES", DEFAULT_INDEXES))


def index_path_for(corpus: Path, index: str | None) -> Path:
    """Where ``retrieve index CORPUS [--index X]`` writes: ``X`` if given, else ``indexes/<corpus name>``."""
    if index:
        return _as_path(index)
    name = Path(corpus).resolve().name or "index"
    return indexes_dir() / name


def find_index(index: str | None) -> Path:
    """Resolve ``--index`` for commands that read an index; omitted means "the only one"."""
    if index:
        path = _as_path(index)
        if not (path / "meta.duckdb").is_file():
            raise IndexNotFoundError(f"no index at {path}; build one with `retrieve index CORPUS --index {index}`")
        return path
    root = indexes_dir()
    found = sorted(p for p in root.glob("*") if (p / "meta.duckdb").is_file()) if root.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise IndexNotFoundError(f"no index under {root}/; build one with `retrieve index CORPUS`")
    raise IndexNotFoundError(
        f"{len(found)} indexes under {root}/ ({', '.join(p.name for p in found)}); choose one with --index NAME")


def _as_path(index: str) -> Path:
    p = Path(index)
    return p if (os.sep in index or p.exists() or index.startswith(".")) else indexes_dir() / index


class Index:
    """An opened index. Cheap to open; the encoder loads on the first query and stays warm."""

    def __init__(self, store: Store, device: str = "cpu") -> None:
        self.store = store
        self.recipe = store.require_recipe()
        self.device = device
        self._encoder: Encoder | None = None

    @classmethod
    def open(cls, path: str | Path | None = None, *, device: str = "cpu", writable: bool = False) -> Index:
        """Open an index folder (or a name under ``indexes/``; None = the only one there)."""
        return cls(Store.open(find_index(None if path is None else str(path)), writable=writable), device)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = encoder_for(self.recipe, self.device)
        return self._encoder

    # -- queries ---------------------------------------------------------------------------

    def embed(self, clip: str | Path | np.ndarray, *, sample_rate: int | None = None,
              start_s: float | None = None, end_s: float | None = None) -> np.ndarray:
        """The ``(D,)`` search vector of a clip (path or mono array), as the index would store it."""
        audio = self._audio(clip, sample_rate, start_s, end_s)
        r = self.recipe
        raw, _, _ = embed_clip(self.encoder, audio, r.window_samples, r.hop_samples, r.pooling)
        return self.store.postprocess.apply(raw[None])[0]

    def search(self, clip: str | Path | np.ndarray, k: int = 10, *, segments: bool = False,
               where: str | Sequence[str] | None = None, sample_rate: int | None = None,
               start_s: float | None = None, end_s: float | None = None) -> pd.DataFrame:
        """Search by example. Files are ranked by their best window; ``segments=True`` returns windows."""
        return self.search_vector(self.embed(clip, sample_rate=sample_rate, start_s=start_s, end_s=end_s),
                                  k, segments=segments, where=where)

    def search_text(self, text: str, k: int = 10, *, segments: bool = False,
                    where: str | Sequence[str] | None = None) -> pd.DataFrame:
        """Search by a text description; needs an encoder with a text tower (CLAP)."""
        vec = self.text_vector(text)
        return self.search_vector(vec, k, segments=segments, where=where)

    def text_vector(self, text: str | Sequence[str]) -> np.ndarray:
        """Text embedding(s) mapped into this index's search space: ``(D,)`` or ``(n, D)``."""
        texts = [text] if isinstance(text, str) else list(text)
        raw = lift(self.encoder.text_embeddings(texts), self.recipe.pooling)
        out = self.store.postprocess.apply(raw)
        return out[0] if isinstance(text, str) else out

    def search_vector(self, vector: np.ndarray, k: int = 10, *, segments: bool = False,
                      where: str | Sequence[str] | None = None) -> pd.DataFrame:
        """Search with a ready ``(D,)`` unit vector in the index's space."""
        if k < 1:
            raise InputError(f"k must be at least 1; got {k}")
        flt = compile_where(where, self.store.db.column_types())
        fn = search_segments if segments else search_files
        return fn(self.store, np.asarray(vector, np.float32), k, flt)

    def _audio(self, clip: str | Path | np.ndarray, sample_rate: int | None,
               start_s: float | None, end_s: float | None) -> np.ndarray:
        sr = self.recipe.sample_rate
        if isinstance(clip, (str, Path)):
            return load(Path(clip), sr, start_s=start_s, end_s=end_s)
        if sample_rate is None:
            raise InputError(f"an audio array needs sample_rate=...; this index works at {sr} Hz")
        audio = np.asarray(clip, np.float32)
        if audio.ndim == 2:
            audio = audio.mean(axis=1 if audio.shape[0] > audio.shape[1] else 0)
        if audio.ndim != 1 or audio.size == 0:
            raise InputError(f"audio must be a non-empty (samples,) or (samples, channels) array; got {audio.shape}")
        a = 0 if start_s is None else int(round(start_s * sample_rate))
        b = None if end_s is None else int(round(end_s * sample_rate))
        audio = np.nan_to_num(audio[a:b], nan=0.0, posinf=0.0, neginf=0.0)
        if sample_rate != sr:
            import soxr

            audio = soxr.resample(audio, sample_rate, sr).astype(np.float32)
        if audio.size == 0:
            raise InputError("the cropped clip is empty")
        return audio

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
        flt = compile_where(where, self.store.db.column_types())
        tbl = arrow_of(self.store.db.con.sql(
            "SELECT s.segment_id, s.start_sample, s.end_sample, s.vector, f.* EXCLUDE (content_hash) "
            "FROM segments s JOIN files f USING (file_id) WHERE s.level = ? AND s.vector IS NOT NULL"
            + (f" AND ({flt.sql})" if flt else "") + " ORDER BY s.segment_id",
            params=[level, *(flt.params if flt else ())]))
        raw = vectors_of(tbl, "vector", r.dim)
        meta = tbl.drop(["vector"]).to_pandas()
        meta.insert(1, "start_s", meta.pop("start_sample") / r.sample_rate)
        meta.insert(2, "end_s", meta.pop("end_sample") / r.sample_rate)
        vecs = self.store.postprocess.apply(raw) if processed and len(raw) else raw
        return meta, vecs

    def files(self) -> pd.DataFrame:
        return arrow_of(self.store.db.con.sql("SELECT * EXCLUDE (content_hash) FROM files ORDER BY path")).to_pandas()

    def errors(self) -> pd.DataFrame:
        return arrow_of(self.store.db.con.sql("SELECT * FROM errors ORDER BY path")).to_pandas()

    def info(self) -> dict[str, Any]:
        return self.store.info()

    def export(self, out: str | Path) -> int:
        """Write one Parquet row per vector (file and window levels); returns rows written."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        frames = []
        for level in ("file", "segment"):
            meta, vecs = self.embeddings(level)  # type: ignore[arg-type]
            keep = ["path", "start_s", "end_s"] + [c for c in self.store.db.metadata_columns() if c in meta]
            df = meta[keep].copy()
            df.insert(1, "level", level)
            df["embedding"] = list(vecs.astype(np.float32))
            frames.append(df)
        table = pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)
        pq.write_table(table, str(out))
        return table.num_rows
