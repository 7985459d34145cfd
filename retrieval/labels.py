"""Labels and metadata for indexed files.

By default a file's label is the name of the folder that holds it
(``corpus/dog/x.wav`` -> ``dog``; files at the corpus root have none). A CSV given with
``--labels`` attaches every one of its columns; it needs a ``file`` or ``path`` column
relative to the corpus, and a ``label`` column in it overrides the folder label.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pandas as pd
import pyarrow as pa

from retrieval.errors import InputError

KEY_COLUMNS = ("file", "path")


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


def read_labels_csv(path: Path) -> pa.Table:
    """Read a labels CSV into an Arrow table keyed by a ``path`` column.

    Column types are inferred (integers stay integers, so ``--where "take >= 10"`` works);
    empty cells become NULL.

    Raises:
        InputError: the file is missing or unreadable, has no key column, or repeats a path.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read labels CSV {path}: {exc}") from exc
    key = next((c for c in KEY_COLUMNS if c in df.columns), None)
    if key is None:
        raise InputError(f"labels CSV {path} needs a 'file' or 'path' column; it has: {', '.join(map(str, df.columns))}")
    df = df.rename(columns={key: "path"})
    df["path"] = df["path"].map(normalize_rel_path)
    dupes = df["path"][df["path"].duplicated()].unique()
    if len(dupes):
        raise InputError(f"labels CSV {path} lists {len(dupes)} paths twice, e.g. {dupes[0]!r}")
    if "label" in df.columns:
        df["label"] = df["label"].map(lambda v: None if pd.isna(v) else str(v))
    df.columns = [str(c).strip() for c in df.columns]
    return pa.Table.from_pandas(df, preserve_index=False)
