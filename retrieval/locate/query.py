"""The query side of ``locate``: a clip (file or array) or a text, as one vector.

A clip is embedded as :meth:`retrieval.index.Index.embed` embeds it: cut into the scan's
windows, pooled per window, then pooled over its windows (frame-count weighted, so it
equals pooling every frame of the clip; ``none`` pools by the mean). A clip no longer
than the window is therefore one window, and a longer clip is compared by the mean of
its window vectors -- one vector per query, so the long file is scanned once at the
scan's window length whatever the clip's length. (Without an index, the default window
*is* the clip's length; see :mod:`retrieval.locate.api`.)
"""

from __future__ import annotations

import numpy as np

from retrieval.embed import embed_clip
from retrieval.encoders.registry import text_encoders
from retrieval.errors import EncoderError, InputError
from retrieval.pooling import lift
from retrieval.locate.curve import Scan


def clip_vector(scan: Scan, audio: np.ndarray) -> np.ndarray:
    """``(P',)`` float32: the clip's pooled vector through ``scan.transform`` (see the module docstring)."""
    raw, _, _ = embed_clip(scan.encoder, audio, scan.window_samples, scan.hop_samples, scan.pooling,
                           scan.batch_size)
    return np.asarray(scan.transform(raw[None]), np.float32)[0]


def text_vector(scan: Scan, text: str) -> np.ndarray:
    """``(P',)`` float32: a text embedding lifted into the pooled space and through ``scan.transform``.

    Raises:
        EncoderError: the encoder has no text tower.
    """
    if not getattr(scan.encoder, "has_text", False):
        names = text_encoders()
        raise EncoderError(f"encoder {scan.encoder.name!r} has no text tower; locating a text needs one of: "
                           f"{', '.join(names)} (pass --encoder {names[0]}, or --index of an index built with it)")
    if not text.strip():
        raise InputError("the text query is empty")
    raw = lift(np.asarray(scan.encoder.text_embeddings([text]), np.float32), scan.pooling)
    return np.asarray(scan.transform(raw), np.float32)[0]
