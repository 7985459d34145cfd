"""``retrieve locate --target T LONG_FILE``: frame scores from a trained head instead of a query's similarity.

Every window of the long file (the index's window, hop, pooling and post-processing,
streamed) is scored by the head of target ``T`` (:mod:`retrieval.heads`; a probability), and
the events come from the same SED post-processing as a query's curve
(:func:`retrieval.locate.api.events_of`). The default threshold is the head's decision
boundary, 0.5.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from retrieval.audio.windows import check_window, to_samples
from retrieval.locate.api import HOP_SHARE, Located, _share, events_of
from retrieval.locate.options import LocateOptions
from retrieval.locate.curve import Curve, Scan, window_vectors

if TYPE_CHECKING:
    from retrieval.index import Index

#: The default threshold of a head's probability curve.
HEAD_THRESHOLD = 0.5
#: Default ``near_peak``: an event spans its whole run of windows above the threshold (a head's
#: probability is flat across a steady sound, unlike a query's similarity, which peaks where the clip fits).
WHOLE_RUN = 1e-9


def locate_target(index: Index, target: str, long_file: str | Path, *, window_s: float | None = None,
                  hop_s: float | None = None, threshold: float | None = HEAD_THRESHOLD,
                  max_gap_s: float | None = None, min_dur_s: float | None = None, near_peak: float = WHOLE_RUN,
                  plot: str | Path | None = None, batch_size: int = 32) -> Located:
    """Events of ``target`` in ``long_file`` from its head's window probabilities.

    ``threshold`` None takes the adaptive threshold of query curves instead of 0.5.

    Raises:
        InputError: no head for ``target``, or one trained on another recipe.
    """
    head = index.adapter().head(target)  # checked against the recipe before any audio is read
    r = index.recipe
    LocateOptions(window_s=window_s, hop_s=hop_s, max_gap_s=max_gap_s, min_dur_s=min_dur_s)  # checks the values
    window = to_samples(window_s, r.sample_rate) if window_s is not None else r.window_samples
    if hop_s is not None:
        hop = to_samples(hop_s, r.sample_rate)
    else:
        hop = _share(window, HOP_SHARE) if window_s is not None else r.hop_samples
    check_window(window, hop)
    scan = Scan(index.encoder, window, hop, r.pooling, index.store.postprocess.apply, False, batch_size)
    windows, vectors, n_samples = window_vectors(scan, Path(long_file))
    curve = Curve(windows, head.scores(vectors), scan.sample_rate, n_samples)
    located = events_of(scan, curve, Path(long_file), threshold, max_gap_s, min_dur_s, near_peak, plot, [],
                        f"target {target}")
    located.events.attrs["target"] = target
    return located
