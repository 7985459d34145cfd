"""Copy frames of files: one named file (a query, a long recording), or an index's files
that have none yet (indexed before ``--copies`` was turned on)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from retrieval.audio.decode import probe, stream
from retrieval.audio.paths import to_os
from retrieval.copies.features import BANDS, COPY_RATE, FEATURE_VERSION, CopyStream
from retrieval.errors import AudioError
from retrieval.store.copies import CopyStore

#: Files whose frames are written per transaction when filling in.
FILL_BATCH = 256


def frames_of_path(path: Path, start_s: float | None = None, end_s: float | None = None,
                   leads: tuple[int, ...] = (0,)) -> np.ndarray:
    """``(T, BANDS)`` uint8 copy frames of a file (optionally cropped, seconds of the source).

    With several ``leads`` (zeros before the audio, samples at ``COPY_RATE``): one decode,
    and a ``(len(leads), T', BANDS)`` stack of framings at those phases, padded at the end
    with the floor level to a common length.

    Raises:
        AudioError: the file cannot be decoded or holds no samples.
    """
    info = probe(Path(path))
    streams = [CopyStream(info.sample_rate, info.channels, lead) for lead in leads]

    def tap(block: np.ndarray) -> None:
        for s in streams:
            s.add(block)

    n = 0
    for block in stream(Path(path), COPY_RATE, start_s=start_s, end_s=end_s, info=info, tap=tap):
        n += block.size
    if n == 0:
        raise AudioError(f"{Path(path).name} holds no audio samples")
    out = [s.finish() for s in streams]
    if len(out) == 1 and leads == (0,):
        return out[0]
    t = max(len(f) for f in out)
    return np.stack([np.concatenate([f, np.zeros((t - len(f), BANDS), np.uint8)]) for f in out])


def fill_missing(store: object, warn: Callable[[str], None] | None = None) -> int:
    """Compute and store copy frames for every ``ok`` file of ``store`` without current ones.

    Files are decoded again (ingest computes the frames of the files it embeds in the same
    pass; this is for files indexed before ``--copies``). A file that fails to decode gets
    a warning and no frames. Returns the number of files filled in.
    """
    cs = CopyStore(store.db)  # type: ignore[attr-defined]
    with store.db.transaction():  # type: ignore[attr-defined]
        cs.prune()
    todo = cs.missing(FEATURE_VERSION)
    done = 0
    for a in range(0, len(todo), FILL_BATCH):
        batch: list[tuple[int, np.ndarray]] = []
        for fid, rel, root in todo[a:a + FILL_BATCH]:
            path = Path(to_os(root)) / to_os(rel) if root else Path(to_os(rel))
            try:
                batch.append((fid, frames_of_path(path)))
            except (AudioError, OSError) as exc:
                if warn:
                    warn(f"{rel}: no copy frames ({exc})")
        with store.db.transaction():  # type: ignore[attr-defined]
            cs.put_frames(batch, FEATURE_VERSION)
        done += len(batch)
    return done


__all__ = ["BANDS", "fill_missing", "frames_of_path"]
