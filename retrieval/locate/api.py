"""``locate``: where in a long recording does a clip (or a text) occur?

    >>> from retrieval.locate import locate
    >>> locate("bark.wav", "night.wav")            # events DataFrame, in time order
    >>> Index.open("dogs").locate("bark.wav", "night.wav")   # with that index's recipe

Steps: embed the query (:mod:`.query`); stream the long file and score each window
(:mod:`.curve`); threshold, fill gaps, drop short events (:mod:`.events`); optionally
plot (:mod:`.plot`). The long file need not be in any index.

Defaults without an index, and why:

* **window = the query clip's length.** The clip is then one window, compared with
  windows of the long file that could hold exactly it, and the best of those windows
  *is* the occurrence: its span gives the onset and offset. (A longer window dilutes the
  match with whatever surrounds it and can only place it within a window; a text query
  has no length, so it gets the encoder's default window.)
* **hop = 1/8 of the window** (:data:`HOP_SHARE`). An event covers its best window,
  whose start is then within half a hop of the onset of a copy of the query; 1/8 also
  keeps that window's score near its peak.
* **pooling** = the encoder's default, **standardize** = True (:mod:`.curve`).
* **threshold** = adaptive: the middle of the largest drop among the curve's tallest
  peaks (:func:`~retrieval.locate.events.adaptive_threshold`).
* **near_peak = 1**: an event is its best window (a copy of the clip fills it exactly);
  pass 0.9 to have a steady sound longer than the clip reported whole.
* **max_gap_s = half the window**: detections closer than half a window share most of
  their windows' audio, so windows of this length cannot tell them apart as two sounds.
  **min_dur_s = 0**: every event already covers at least its best window, so nothing is
  dropped unless asked.

With an index, its recipe (encoder, window, hop, pooling, post-processing) is used for
both the query and the long file; ``window_s`` / ``hop_s`` override it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from retrieval.audio.decode import probe
from retrieval.audio.windows import check_window, to_samples
from retrieval.encoders.base import Encoder, EncoderOptions
from retrieval.errors import InputError
from retrieval.postprocess import l2_normalize
from retrieval.locate.curve import Curve, Scan, similarity_curve
from retrieval.locate.events import Threshold, adaptive_threshold, detect, fixed_threshold
from retrieval.locate.options import RECIPE_FIELDS, LocateOptions
from retrieval.audio.clip import Clip, clip_audio
from retrieval.locate.query import clip_vector, text_vector

if TYPE_CHECKING:
    from retrieval.recipe import Recipe

#: Default hop as a share of the window.
HOP_SHARE = 1 / 8
#: Default ``max_gap`` as a share of the window.
GAP_SHARE = 1 / 2
#: Columns of the events DataFrame, in order.
COLUMNS = ("start_s", "end_s", "duration_s", "peak_s", "peak_score", "mean_score")


@dataclass(frozen=True)
class Located:
    """Everything ``locate`` computed.

    Attributes:
        events: the events DataFrame (:data:`COLUMNS`, one row per event, in time order;
            ``attrs`` hold the threshold, background, window and hop in seconds, and more).
        curve: the similarity curve, one score per window.
        threshold: the threshold applied, with the curve's background.
        plot: where the plot was written, or None.
    """

    events: pd.DataFrame
    curve: Curve
    threshold: Threshold
    plot: Path | None = None


class IndexView(Protocol):
    """What locating with an index takes from it (:class:`retrieval.index.Index` is one)."""

    @property
    def recipe(self) -> Recipe: ...

    @property
    def encoder(self) -> Encoder: ...

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Raw pooled ``(n, D)`` float32 vectors -> the index's searched space ``(n, D')``."""
        ...


def locate(query: Clip | None, long_file: str | Path, options: LocateOptions | None = None,
           **changes: Any) -> pd.DataFrame:
    """Events where ``query`` (a clip) or ``options.text`` occurs in ``long_file``; see :func:`locate_curve`."""
    return locate_curve(query, long_file, options, **changes).events


def locate_curve(query: Clip | None, long_file: str | Path, options: LocateOptions | None = None,
                 **changes: Any) -> Located:
    """Locate a clip or a text in a long file without an index.

    Args:
        query: the clip (audio file, or array with ``sample_rate``); None with ``text``.
        long_file: the recording to search; streamed, never loaded whole.
        options: how (:class:`~retrieval.locate.options.LocateOptions`; default: its defaults,
            with the ``logmel`` encoder).
        changes: fields of :class:`~retrieval.locate.options.LocateOptions` to change, as
            keywords (``text="a dog"``, ``window_s=0.5``, ``encoder=...``).

    Returns:
        :class:`Located`; ``events`` has columns :data:`COLUMNS` in seconds and scores, and
        ``events.attrs["warnings"]`` (e.g. a query clip longer than ``long_file``).

    Raises:
        InputError: neither or both of ``query`` and ``text``, bad window, hop or durations,
            an unknown option.
        AudioError: a file that cannot be decoded.
        EncoderError: a text query with an encoder that has no text tower.
    """
    from retrieval.encoders import build
    from retrieval.pooling import check_mode

    o = LocateOptions.of(options, **changes)
    _one_query(query, o.text)
    encoder = o.encoder if o.encoder is not None else "logmel"
    enc = encoder if not isinstance(encoder, str) else build(
        encoder, EncoderOptions(model=o.model, device=o.device, extra=dict(o.encoder_options or {})))
    sr = int(enc.sample_rate)
    audio = None if query is None else clip_audio(query, sr, sample_rate=o.sample_rate, start_s=o.start_s,
                                                  end_s=o.end_s)
    if o.window_s is not None:
        window = to_samples(o.window_s, sr)
    elif audio is not None:
        window = len(audio)
    else:
        window = to_samples(enc.default_window_s, sr)
    hop = to_samples(o.hop_s, sr) if o.hop_s is not None else _share(window, HOP_SHARE)
    check_window(window, hop)
    scan = Scan(enc, window, hop, check_mode(o.pooling or enc.default_pooling), l2_normalize, o.standardize,
                o.batch_size)
    return _run(scan, audio, Path(long_file), o)


def locate_with_index(index: IndexView, query: Clip | None, long_file: str | Path,
                      options: LocateOptions | None = None, **changes: Any) -> pd.DataFrame:
    """:func:`locate` with an index's recipe: its encoder, window, hop, pooling and post-processing.

    ``window_s`` overrides the recipe's window (and then the hop defaults to 1/8 of it);
    ``hop_s`` overrides the hop. ``encoder``, ``model``, ``encoder_options`` and ``pooling``
    come from the recipe and are refused. The rest is as in :func:`locate_curve`.
    """
    return locate_curve_with_index(index, query, long_file, options, **changes).events


def locate_curve_with_index(index: IndexView, query: Clip | None, long_file: str | Path,
                            options: LocateOptions | None = None, **changes: Any) -> Located:
    """:func:`locate_with_index`, returning the curve and threshold too (:class:`Located`)."""
    o = LocateOptions.of(options, **changes)
    fixed = [name for name in RECIPE_FIELDS if getattr(o, name) is not None]
    if fixed:
        raise InputError(f"{', '.join(fixed)} come(s) from the index's recipe when locating with an index; "
                         "leave them unset, or locate without the index")
    _one_query(query, o.text)
    r = index.recipe
    window = to_samples(o.window_s, r.sample_rate) if o.window_s is not None else r.window_samples
    if o.hop_s is not None:
        hop = to_samples(o.hop_s, r.sample_rate)
    else:
        hop = _share(window, HOP_SHARE) if o.window_s is not None else r.hop_samples
    check_window(window, hop)
    scan = Scan(index.encoder, window, hop, r.pooling, index.transform, o.standardize, o.batch_size)
    audio = None if query is None else clip_audio(query, r.sample_rate, sample_rate=o.sample_rate,
                                                  start_s=o.start_s, end_s=o.end_s)
    return _run(scan, audio, Path(long_file), o)


# -- internals -----------------------------------------------------------------------------


def _run(scan: Scan, audio: np.ndarray | None, long_file: Path, o: LocateOptions) -> Located:
    sr = scan.sample_rate
    text = o.text
    warnings = [] if audio is None else _swap_warnings(len(audio) / sr, long_file)
    qvec = text_vector(scan, text) if text is not None else clip_vector(scan, audio)  # type: ignore[arg-type]
    curve = similarity_curve(scan, qvec, long_file)
    what = f'"{text}"' if text is not None else f"query ({len(audio) / sr:.2f} s)"  # type: ignore[arg-type]
    return events_of(scan, curve, long_file, o.threshold, o.max_gap_s, o.min_dur_s, o.near_peak, o.plot, warnings,
                     what)


def events_of(scan: Scan, curve: Curve, long_file: Path, threshold: float | None, max_gap_s: float | None,
              min_dur_s: float | None, near_peak: float, plot: str | Path | None, warnings: list[str],
              what: str) -> Located:
    """The SED post-processing of a score curve (threshold, gap filling, minimum duration) into events.

    ``threshold`` None picks the adaptive threshold; ``what`` names the query in the plot title.
    """
    sr = scan.sample_rate
    max_gap = _share(scan.window_samples, GAP_SHARE) if max_gap_s is None else to_samples(max_gap_s, sr)
    min_dur = 0 if min_dur_s is None else to_samples(min_dur_s, sr)
    if threshold is None:
        thr = adaptive_threshold(curve.windows, curve.scores)
    else:
        thr = fixed_threshold(curve.scores, threshold)
    ev = detect(curve.windows, curve.scores, thr, max_gap, min_dur, near_peak)
    iv = ev.intervals.astype(np.float64) / sr
    centre = curve.windows.mean(axis=1) / sr
    frame = pd.DataFrame({
        "start_s": iv[:, 0], "end_s": iv[:, 1], "duration_s": iv[:, 1] - iv[:, 0],
        "peak_s": centre[ev.peak_index], "peak_score": ev.peak_score, "mean_score": ev.mean_score,
    }, columns=list(COLUMNS))
    frame.attrs.update({
        "threshold": thr.value, "background": thr.background, "threshold_rule": thr.rule,
        "window_s": scan.window_samples / sr, "hop_s": scan.hop_samples / sr, "duration_s": curve.duration_s,
        "encoder": scan.encoder.name, "pooling": scan.pooling, "standardize": scan.standardize,
        "warnings": warnings,
    })
    written = None
    if plot is not None:
        from retrieval.locate.plot import plot_curve

        written = plot_curve(curve, ev, thr, plot, title=f"{what} in {long_file.name}: {len(ev)} event(s)")
    return Located(frame, curve, thr, written)


#: A query clip may exceed the long file by this much (resampling rounds lengths) before it is flagged.
SWAP_SLACK_S = 0.01


def _swap_warnings(clip_s: float, long_file: Path) -> list[str]:
    """A warning when the query clip is longer than the file it is looked for in (arguments swapped?)."""
    long_s = probe(long_file).duration_s
    if clip_s <= long_s + SWAP_SLACK_S:
        return []
    return [f"the query clip ({clip_s:.2f} s) is longer than {long_file.name} ({long_s:.2f} s), so it cannot "
            "occur in it whole; were the arguments swapped? give CLIP first, then LONG_FILE"]


def _one_query(query: Clip | None, text: str | None) -> None:
    if (query is None) == (text is None):
        raise InputError("give exactly one query: a clip, or text=... (got "
                         + ("both" if query is not None else "neither") + ")")


def _share(window: int, share: float) -> int:
    return max(int(round(window * share)), 1)
