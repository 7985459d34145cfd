"""``lookup/``: what a one-off search needs from DuckDB, kept beside the index as plain files,
so ``retrieve query`` answers without importing or opening DuckDB (issue 16 item 9: importing
duckdb and opening the database cost about a third of a cold log-mel query).

A writer that closes cleanly writes it next to ``info.json`` (:func:`write`), from the
committed state, before it takes the stamp that ``info.json`` records; the lookup's files
are among the stamped ones (:data:`retrieval.store.summary.WATCHED`). A reader therefore
trusts the lookup exactly when it trusts the summary: while no file of the index (database,
WAL, FAISS, lookup) has changed since. Anything else (a commit by another process, a
writer at work, a damaged or deleted lookup) sends the caller down the full path, which
opens the database. Like FAISS it is derived data: deleting it costs one slower query.

Files (all written to temporary names, then moved into place; ``lookup.json`` last):

    windows.npy        (n, 4) int64: window_id, file_id, start_sample, end_sample of every
                       row with a vector, sorted by window_id
    files.jsonl        one JSON object per file, sorted by file_id: file_id, path, root,
                       duration_s and the shown metadata columns
    files_offsets.npy  (m + 1,) int64 byte offsets of those lines; files_ids.npy (m,) int64
    postprocess.npz    the fitted post-processing's arrays
    lookup.json        the recipe, generation, fit digest, shown columns, roots and the
                       state key the rest was read at

An index whose metadata holds values JSON cannot carry exactly (dates, decimals, blobs)
gets no lookup; its queries take the full path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.hits import positions
from retrieval.store.summary import LOOKUP_FILES as FILES
from retrieval.store.vectors import _save_npy, _write_atomic

LOOKUP = "lookup"
META = "lookup.json"
#: Python types a metadata value may have to be carried through JSON unchanged.
_PLAIN = (str, int, float, bool, type(None))


def recorded_key(root: Path) -> str | None:
    """The state key the lookup of ``root`` was written at; None when it has none (or an unreadable one)."""
    try:
        meta = json.loads((Path(root) / LOOKUP / META).read_text())
    except (OSError, ValueError):
        return None
    return meta.get("state_key") if isinstance(meta, dict) else None


def write(root: Path, *, meta: dict[str, Any], windows: np.ndarray, files: list[dict[str, Any]],
          postprocess: dict[str, np.ndarray]) -> bool:
    """Write the lookup of ``root``; False (and no lookup left) when the rows cannot go through JSON.

    Args:
        meta: ``recipe`` (JSON text), ``generation``, ``fit_digest``, ``columns`` (the shown
            metadata columns), ``roots`` and ``state_key``.
        windows: ``(n, 4)`` int64 rows ``window_id, file_id, start_sample, end_sample``.
        files: one dict per file with ``file_id``, ``path``, ``root``, ``duration_s`` and each
            of ``meta["columns"]``.
        postprocess: the fitted post-processing's arrays (may be empty).
    """
    folder = Path(root) / LOOKUP
    if not all(isinstance(v, _PLAIN) for row in files for v in row.values()):
        remove(root)
        return False
    order = np.argsort(windows[:, 0], kind="stable") if len(windows) else np.zeros(0, np.int64)
    files = sorted(files, key=lambda r: r["file_id"])
    lines = [(json.dumps(r, allow_nan=True) + "\n").encode() for r in files]
    offsets = np.zeros(len(lines) + 1, np.int64)
    np.cumsum([len(b) for b in lines], out=offsets[1:])
    try:
        folder.mkdir(exist_ok=True)
        (folder / META).unlink(missing_ok=True)  # no reader trusts a half-replaced lookup
        _write_atomic(folder / "windows.npy",
                      lambda tmp: _save_npy(tmp, np.ascontiguousarray(windows[order], np.int64)))
        _write_atomic(folder / "files.jsonl", lambda tmp: Path(tmp).write_bytes(b"".join(lines)))
        _write_atomic(folder / "files_offsets.npy", lambda tmp: _save_npy(tmp, offsets))
        file_ids = np.array([r["file_id"] for r in files], np.int64)
        _write_atomic(folder / "files_ids.npy", lambda tmp: _save_npy(tmp, file_ids))
        _write_atomic(folder / "postprocess.npz", lambda tmp: _save_npz(tmp, postprocess))
        _write_atomic(folder / META, lambda tmp: Path(tmp).write_text(json.dumps(meta)))
    except OSError:  # a read-only folder: the lookup is optional
        remove(root)
        return False
    return True


def remove(root: Path) -> None:
    """Delete the lookup's files (a missing one is fine)."""
    for name in FILES:
        try:
            (Path(root) / name).unlink(missing_ok=True)
        except OSError:
            pass


@dataclass(frozen=True)
class Lookup:
    """A read-only lookup, memory-mapped. Open it only after the summary's stamp was checked
    (:func:`retrieval.store.summary.read_fresh`), so it belongs to the committed state."""

    root: Path
    meta: dict[str, Any]
    windows: np.ndarray       # (n, 4) int64, sorted by window_id
    offsets: np.ndarray       # (m + 1,) int64 byte offsets into files.jsonl
    file_ids: np.ndarray      # (m,) int64, sorted

    @classmethod
    def open(cls, root: Path) -> Lookup | None:
        """The lookup of ``root``; None when any part is missing or unreadable."""
        folder = Path(root) / LOOKUP
        try:
            meta = json.loads((folder / META).read_text())
            windows = np.load(folder / "windows.npy", mmap_mode="r")
            offsets = np.load(folder / "files_offsets.npy")
            file_ids = np.load(folder / "files_ids.npy")
        except (OSError, ValueError):
            return None
        if (not isinstance(meta, dict) or windows.ndim != 2 or windows.shape[1] != 4
                or len(offsets) != len(file_ids) + 1):
            return None
        return cls(Path(root), meta, windows, offsets, file_ids)

    def postprocess_state(self) -> dict[str, np.ndarray]:
        with np.load(self.root / LOOKUP / "postprocess.npz") as z:
            return {k: z[k] for k in z.files}

    def _rows(self, window_ids: np.ndarray) -> np.ndarray:
        """Rows of ``windows`` for ``(n,)`` ids (KeyError for an id it lacks)."""
        return np.asarray(self.windows[positions(self.windows[:, 0], window_ids)])

    def files_of(self, window_ids: np.ndarray) -> np.ndarray:
        """``(n,)`` int64 file id of each of the ``(n,)`` vector ids."""
        return self._rows(window_ids)[:, 1].copy() if len(window_ids) else np.zeros(0, np.int64)

    def hit_rows(self, window_ids: np.ndarray) -> dict[int, dict[str, Any]]:
        """``window_id -> {file_id, start_sample, end_sample, path, root, duration_s, *columns}``,
        as :meth:`retrieval.store.db.MetadataDB.hit_rows` gives them."""
        out: dict[int, dict[str, Any]] = {}
        if not len(window_ids):
            return out
        rows = self._rows(window_ids)
        at = positions(self.file_ids, rows[:, 1])
        with open(self.root / LOOKUP / "files.jsonl", "rb") as f:
            for (sid, fid, start, end), i in zip(rows.tolist(), at.tolist()):
                f.seek(int(self.offsets[i]))
                record = json.loads(f.read(int(self.offsets[i + 1] - self.offsets[i])))
                out[sid] = {"file_id": fid, "start_sample": start, "end_sample": end, **record}
        return out


def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez given a name would append ".npz"
        np.savez(f, **arrays)
