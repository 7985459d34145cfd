"""Export an index's vectors to Parquet, saying which vectors they are.

Two kinds of vector (``vectors``):
    searched  what the index searches: the pooled vector after the recipe's
              post-processing (``center``/``whiten``, fitted on this corpus) and L2
              normalisation. A dot product of two of them is ``retrieve query``'s score.
    raw       the pooled encoder output as stored in DuckDB, before post-processing and
              normalisation: independent of this corpus's fit, for your own processing.

Three levels (``level``):
    file      one vector per file (none when the index was built with ``--pooling none``)
    window    one vector per analysis window, with its ``start_s``/``end_s``
    both      both, told apart by the ``level`` column (``file`` or ``window``)

Each row holds ``path, level, start_s, end_s``, the metadata columns and ``embedding``
(float32 list). The Parquet schema metadata key ``retrieve`` holds a JSON object with
the same facts as :class:`ExportSummary` plus the recipe, so the file says what it is.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from retrieval.errors import InputError
from retrieval.options import EXPORT_LEVELS, VECTOR_KINDS, ExportLevel, VectorKind, check_choice

if TYPE_CHECKING:
    from retrieval.recipe import Recipe
    from retrieval.store import Store


class Exportable(Protocol):
    """What an export reads of an index (:class:`retrieval.index.Index` is one)."""

    @property
    def recipe(self) -> Recipe: ...

    @property
    def store(self) -> Store: ...

    def embeddings(self, level: Any = "file", *, processed: bool = True,
                   where: Any = None) -> tuple[pd.DataFrame, np.ndarray]:
        """``(meta, (n, D) float32 vectors)`` of one level (see ``Index.embeddings``)."""
        ...


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`export_vectors` wrote.

    Attributes:
        path: the Parquet file.
        rows: rows written (= vectors).
        files, windows: rows of each level.
        vectors: ``searched`` or ``raw``.
        level: ``file``, ``window`` or ``both``.
        dim: length of each embedding.
        postprocess: the recipe's post-processing (applied only to ``searched`` vectors).
        normalised: whether every embedding has unit L2 norm.
        note: a caveat worth printing (e.g. no file vectors in this index), or None.
    """

    path: str
    rows: int
    files: int
    windows: int
    vectors: str
    level: str
    dim: int
    postprocess: str
    normalised: bool
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for people, e.g. ``wrote 40 rows ... searched vectors (whiten, L2-normalised), dim 64``."""
        what = (f"searched vectors (post-processing {self.postprocess}, L2-normalised)" if self.vectors == "searched"
                else "raw pooled vectors (no post-processing, not normalised)")
        return (f"wrote {self.rows} rows to {self.path}: {self.files} file + {self.windows} window {what}, "
                f"dim {self.dim}")


def check_target(out: Path) -> None:
    """A one-line :class:`InputError` unless ``out`` can be created as a file."""
    if out.is_dir():
        raise InputError(f"{out} is a folder; pass a file name such as {out / 'vectors.parquet'}")
    if not out.parent.is_dir():
        raise InputError(f"folder {out.parent} does not exist; create it first (mkdir -p {out.parent})")


def export_vectors(index: Exportable, out: str | Path, *, vectors: VectorKind = "searched",
                   level: ExportLevel = "both") -> ExportSummary:
    """Write one Parquet row per vector of ``index`` to ``out`` (see the module docstring).

    The file is written under a temporary name in the same folder and moved into place,
    so a failed run never leaves a half-written ``out``.

    Raises:
        InputError: an unknown ``vectors``/``level``, a missing folder, ``out`` is a folder,
            ``level="file"`` on an index without file vectors, or the write fails.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_choice("--vectors", vectors, VECTOR_KINDS)
    check_choice("--level", level, EXPORT_LEVELS)
    out = Path(out)
    check_target(out)
    processed = vectors == "searched"
    levels = ["file", "window"] if level == "both" else [level]
    columns = index.store.db.metadata_columns()
    frames, counts = [], {"file": 0, "window": 0}
    for name in levels:
        meta, vecs = index.embeddings(name, processed=processed)  # type: ignore[arg-type]
        located = ["path", "root"] if len(index.store.db.roots()) > 1 else ["path"]  # paths are relative to their root
        df = meta[located + ["start_s", "end_s"] + [c for c in columns if c in meta]].copy()
        df.insert(1, "level", name)
        df["embedding"] = list(np.asarray(vecs, np.float32))
        counts[name] = len(df)
        frames.append(df)
    recipe = index.recipe
    note = None
    if "file" in levels and not counts["file"]:
        note = f"this index keeps no file vectors (pooling {recipe.pooling}); use --level window"
        if level == "file":
            raise InputError(f"nothing to export: {note}")
    dim = index.store.search_dim if processed else recipe.dim
    summary = ExportSummary(str(out), sum(counts.values()), counts["file"], counts["window"], vectors, level, dim,
                            recipe.postprocess, processed, note)
    table = pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)
    facts = {**summary.to_dict(), "recipe_hash": recipe.hash(), "recipe": json.loads(recipe.to_json())}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"retrieve": json.dumps(facts).encode()})
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, str(tmp))
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    return summary
