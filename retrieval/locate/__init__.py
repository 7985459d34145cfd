"""The frame-level view: similarity over time in a long recording, and the events in it.

    from retrieval.locate import locate
    locate("bark.wav", "night.wav")        # events DataFrame: start_s, end_s, peak_s, scores

Modules, in the order data flows: :mod:`.query` (clip or text -> vector), :mod:`.curve`
(long file -> one score per window, streamed), :mod:`.events` (threshold, gap filling,
minimum duration; pure numpy), :mod:`.plot`, and :mod:`.api` (``locate`` and friends),
which all take one :class:`.options.LocateOptions`.
"""

from retrieval.locate.api import IndexView, Located, locate, locate_curve, locate_curve_with_index, locate_with_index
from retrieval.locate.curve import Curve, Scan, similarity_curve
from retrieval.locate.events import Events, Threshold, adaptive_threshold, detect
from retrieval.locate.options import LocateOptions

__all__ = ["Curve", "Events", "IndexView", "LocateOptions", "Located", "Scan", "Threshold", "adaptive_threshold", "detect", "locate",
           "locate_curve", "locate_curve_with_index", "locate_with_index", "similarity_curve"]
