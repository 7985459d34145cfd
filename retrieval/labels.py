"""Labels and metadata for indexed files.

By default a file's label is the name of the folder that holds it
(``corpus/dog/x.wav`` -> ``dog``; files at the corpus root have none). A CSV given with
``--labels`` attaches every one of its columns; it needs a ``file`` or ``path`` column
relative to the corpus (or the column named with ``--labels-key``), and a ``label``
column in it overrides the folder label. Column types are kept as the CSV has them: an
integer column with empty cells stays integer, with NULLs. In an index with several
corpus roots a CSV row applies to the file at that relative path under each root.
"""

from __future__ import annotations

import difflib
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from retrieval.errors import InputError

if TYPE_CHECKING:  # pandas and pyarrow load with a labels CSV only: 1.5 s of a cold `retrieve index`
    import pyarrow as pa

KEY_COLUMNS = ("file", "path")
#: Columns of ``files`` a CSV may not set (ingest owns them); ``label`` is allowed.
RESERVED_COLUMNS = ("file_id", "path", "root", "size", "mtime", "content_hash", "duration_s", "sample_rate",
                    "channels", "format", "n_samples", "status", "n_windows", "indexed_at")


def folder_label(rel_path: str) -> str | None:
    """The immediate parent folder of a corpus-relative path, or None at the root."""
    parent = PurePosixPath(rel_path).parent.name
    return parent or None


def normalize_rel_path(value: str) -> str:
    """``./a\\b.wav`` -> ``a/b.wav``: the form paths take in the ``files`` table."""
    text = str(value).strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def read_labels_csv(path: Path, key: str | None = None) -> pa.Table:
    """Read a labels CSV into an Arrow table keyed by a ``path`` column.

    Args:
        path: the CSV file.
        key: the column holding each file's path relative to the corpus; None looks for
            ``file`` or ``path``.

    Column types are inferred and kept (integers stay integers even with empty cells, so
    ``--where "take >= 10"`` works); empty cells become NULL.

    Raises:
        InputError: the file is missing or unreadable, has no (or an ambiguous) key column,
            repeats a path, or has a column that clashes with a built-in one.
    """
    import pandas as pd
    import pyarrow as pa

    path = Path(path)
    try:
        df = pd.read_csv(path, dtype_backend="pyarrow")
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read labels CSV {path}: {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    columns = ", ".join(df.columns)
    if key is not None:
        if key not in df.columns:
            close = difflib.get_close_matches(key, df.columns, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise InputError(f"labels CSV {path} has no column {key!r} (--labels-key){hint} It has: {columns}")
    else:
        keys = [c for c in KEY_COLUMNS if c in df.columns]
        if len(keys) > 1:
            raise InputError(f"labels CSV {path} has both 'file' and 'path' columns; say which holds the file "
                             "paths with --labels-key file (or --labels-key path)")
        if not keys:
            close = difflib.get_close_matches("file", df.columns, n=3, cutoff=0.5) + [
                c for c in df.columns if c.lower() in ("filename", "file_name", "filepath", "fname", "name")]
            hint = f"; pass --labels-key {close[0]}" if close else "; pass --labels-key COLUMN"
            raise InputError(f"labels CSV {path} needs a 'file' or 'path' column{hint}. It has: {columns}")
        key = keys[0]
    clash = [c for c in df.columns if c != key and c in RESERVED_COLUMNS]
    if clash:
        raise InputError(f"labels CSV {path}: column(s) {', '.join(map(repr, clash))} clash with built-in columns "
                         "of the index; rename them in the CSV")
    df = df.rename(columns={key: "path"})
    if df["path"].isna().any():
        row = int(df["path"].isna().to_numpy().nonzero()[0][0]) + 2
        raise InputError(f"labels CSV {path}: column {key!r} is empty on line {row}; every row needs a file path")
    df["path"] = df["path"].astype(str).map(normalize_rel_path)
    dupes = df["path"][df["path"].duplicated()].unique()
    if len(dupes):
        raise InputError(f"labels CSV {path} lists {len(dupes)} paths twice, e.g. {dupes[0]!r}")
    if "label" in df.columns:
        df["label"] = pd.Series([None if pd.isna(v) else str(v) for v in df["label"]], dtype=object)
    return pa.Table.from_pandas(df, preserve_index=False)
