"""Draw a similarity curve with its detected events and threshold (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retrieval.errors import InputError
from retrieval.locate.curve import Curve
from retrieval.locate.events import Events, Threshold


def plot_curve(curve: Curve, events: Events, threshold: Threshold, out: str | Path, *, title: str = "") -> Path:
    """Write a PNG (or any format matplotlib infers from ``out``'s suffix) and return its path.

    The curve is drawn at the window centres; events are shaded over their ``[start, end)``,
    their peaks marked; the threshold is a solid line and the background (median) a dotted one.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(out)
    if out.parent and not out.parent.is_dir():
        raise InputError(f"cannot write the plot to {out}: folder {out.parent} does not exist")
    sr = curve.sample_rate
    t = curve.windows.mean(axis=1) / sr
    fig, ax = plt.subplots(figsize=(12, 3.2), dpi=100)
    try:
        for a, b in events.intervals / sr:
            ax.axvspan(a, b, color="tab:orange", alpha=0.3, lw=0)
        ax.plot(t, curve.scores, color="tab:blue", lw=1.0, label="similarity")
        ax.axhline(threshold.value, color="tab:red", lw=1.0, label=f"threshold {threshold.value:.3f}")
        ax.axhline(threshold.background, color="0.4", lw=0.8, ls=":", label="background (median)")
        if len(events):
            ax.plot(t[events.peak_index], events.peak_score, "v", color="tab:red", ms=5, label="event peaks")
        ax.set_xlim(0.0, curve.duration_s)
        lo, hi = float(np.min(curve.scores)), float(np.max(curve.scores))
        pad = 0.05 * max(hi - lo, 1e-3)
        ax.set_ylim(min(lo, threshold.value) - pad, max(hi, threshold.value) + pad)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("cosine similarity")
        ax.set_title(title or f"{len(events)} event(s)", fontsize=10)
        ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
        fig.tight_layout()
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out
