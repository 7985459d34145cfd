"""Align two files' copy frames and say whether one holds a copy of the other.

Verification works on the *second differences* of the band levels (dB) across bands and
time, ``d[t, b] = (E[t, b] - E[t, b+1]) - (E[t-1, b] - E[t-1, b+1])`` (the quantity
Haitsma and Kalker binarise for their audio fingerprint; kept continuous here). A gain
change cancels in it, and so does a fixed equalisation; what is left is the fine
spectro-temporal pattern of one particular performance, which another take of the same
word by the same speaker does not repeat.

Only *reliable cells* count: a loud frame (:func:`loud_frames`) whose band levels stand
:data:`FLOOR_MARGIN_DB` above that band's floor in the same file. Noise added to a copy
raises its floors, so its noise-filled cells drop out on both sides instead of diluting
the correlation (on FSDD's tuning speakers this took 10 dB SNR copies from a median
correlation of 0.49 to 0.94, while re-takes stayed near 0.45). In a long recording the
floor is local (:func:`band_floor` over runs as long as the clip sought): noise that
lies only over a copy raises the floor there and not the floor of the whole file.

For every offset between the two files the score is the correlation of ``d`` over the
cells both files trust; :func:`align` returns the best offset, its score and the cells
behind it. A re-take of the same word scores lower than a copy, because its timing
differs by more than a frame somewhere in the word, which the second difference does not
forgive.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from retrieval.copies.features import FRAME_SAMPLES, HOP_S, HOP_SAMPLES, dequantise

#: Frames more than this many dB below the file's loudest frame are not "loud".
LOUD_RANGE_DB = 35.0
#: Seconds either side of a frame whose loudest frame :func:`loud_frames` measures it against.
LOUD_CONTEXT_S = 1.0
#: Frames below this absolute level (dB, band power summed) are never loud.
LOUD_FLOOR_DB = -75.0


#: A band level counts only this many dB above the file's own floor in that band (its
#: :data:`FLOOR_PERCENTILE`): cells below it are noise, and are left out on both sides.
FLOOR_MARGIN_DB = 6.0
FLOOR_PERCENTILE = 10.0
#: Frames whose analysis window reaches past either end of the file (half a window: 4 frames)
#: are never reliable: a file cut inside a sound (a trim) has them computed on partly
#: missing samples, so they differ from the same frames of the uncut recording.
EDGE_FRAMES = FRAME_SAMPLES // (2 * HOP_SAMPLES)
#: Offsets where the two files share fewer reliable cells than this are not scored.
MIN_CELLS = 24


@dataclass(frozen=True)
class Prepared:
    """A file's frames ready for matching.

    Attributes:
        d: ``(T, BANDS-1)`` float32 second differences (dB), zero where not reliable.
        w: ``(T, BANDS-1)`` float32 1.0 on reliable cells: a loud frame whose four levels
            behind the difference stand :data:`FLOOR_MARGIN_DB` above the band's floor, and
            whose window lies inside the file (:data:`EDGE_FRAMES`).
        loud: ``(T,)`` float32 1.0 on loud frames (frame 0 never: it has no predecessor).
        level_db: ``(T,)`` float32 frame level, dB (for the gain evidence).
        bands_db: ``(T, BANDS)`` float32 band levels less the band's floor (power), dB (for :func:`fine_match`).
        band_ok: ``(T, BANDS)`` bool, the band levels that are reliable (loud frame, above the
            band's floor, window inside the file).
    """

    d: np.ndarray
    w: np.ndarray
    loud: np.ndarray
    level_db: np.ndarray
    bands_db: np.ndarray | None = None
    band_ok: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return int(self.d.shape[0])


def loud_frames(level_db: np.ndarray) -> np.ndarray:
    """``(T,)`` bool: within :data:`LOUD_RANGE_DB` of the loudest frame within :data:`LOUD_CONTEXT_S`
    either side, and above :data:`LOUD_FLOOR_DB`.

    Local, not the file's loudest: in a long recording a quiet occurrence among loud sounds
    seconds away is still loud where it is (a word-length file is one context).
    """
    if level_db.size == 0:
        return np.zeros(0, bool)
    from scipy.ndimage import maximum_filter1d

    context = 2 * int(round(LOUD_CONTEXT_S / HOP_S)) + 1
    peak = maximum_filter1d(level_db, size=context, mode="nearest")
    return (level_db > peak - LOUD_RANGE_DB) & (level_db > LOUD_FLOOR_DB)


def band_floor(e: np.ndarray, window: int | None = None) -> np.ndarray:
    """Each band's noise floor, dB: its :data:`FLOOR_PERCENTILE` over the file, or locally.

    Args:
        e: ``(T, BANDS)`` float64 band levels, dB.
        window: None (or ``>= T``): one floor per band over the whole file, ``(BANDS,)``.
            Otherwise frames: the percentile over every run of ``window`` frames inside the
            file, and at each frame the highest floor of the runs that contain it, ``(T, BANDS)``.
            A run as long as a clip placed over a copy of it measures the copy's own floor,
            as if the copy were a file of its own, even where noise lies only around the copy
            (a recording quieter elsewhere has the lower floor of the rest of the file).
    """
    t = len(e)
    if t == 0:
        return np.zeros(e.shape[1])
    if window is None or window >= t:
        return np.percentile(e, FLOOR_PERCENTILE, axis=0)
    from scipy.ndimage import maximum_filter1d, percentile_filter

    half = max(int(window), 1) // 2
    size = 2 * half + 1
    if size > t:
        return np.percentile(e, FLOOR_PERCENTILE, axis=0)
    centred = percentile_filter(e, FLOOR_PERCENTILE, size=(size, 1), mode="nearest")
    centred[:half] = -np.inf  # runs reaching past either end are not measured
    centred[t - half:] = -np.inf
    return maximum_filter1d(centred, size=size, axis=0, mode="nearest")


def prepare(frames: np.ndarray, floor_frames: int | None = None) -> Prepared:
    """``(T, BANDS)`` uint8 copy frames -> :class:`Prepared`.

    ``floor_frames``: None for one noise floor per band over the whole file (a library's
    files, a query); a number of frames (the clip's length, for a long recording the clip
    is sought in) for a local floor (:func:`band_floor`).
    """
    e = dequantise(frames).astype(np.float64)
    t = len(e)
    level = 10.0 * np.log10(np.sum(10.0 ** (e / 10.0), axis=1) + 1e-12) if t else np.zeros(0)
    loud = loud_frames(level)
    if t:
        loud[0] = False
        loud[1:] &= loud[:-1]  # the difference needs both frames
    shape = e[:, :-1] - e[:, 1:]
    d = np.zeros_like(shape)
    d[1:] = shape[1:] - shape[:-1]
    floor = band_floor(e, floor_frames)
    ok = e > floor + FLOOR_MARGIN_DB
    ok[:EDGE_FRAMES] = False
    ok[max(t - EDGE_FRAMES, 0):] = False
    cell = ok[:, :-1] & ok[:, 1:]
    cell[1:] &= cell[:-1].copy()
    if t:
        cell[0] = False
    w = (cell & loud[:, None]).astype(np.float32)
    # band levels with the band's noise floor taken out in power (on reliable cells the floor is
    # at most a quarter of the power): added noise then biases a copy's levels far less
    power, floor_power = 10.0 ** (e / 10.0), 10.0 ** (floor / 10.0)
    clean = np.where(ok, 10.0 * np.log10(np.maximum(power - floor_power, 1e-12)), e)
    return Prepared((d * w).astype(np.float32), w, loud.astype(np.float32), level.astype(np.float32),
                    clean.astype(np.float32), ok & loud[:, None])


def vertex(left: float, mid: float, right: float) -> float:
    """Fractional position (-0.5..0.5 frames) of the peak of the parabola through three scores at
    offsets -1, 0, +1 (``mid`` the largest); 0 when a side is missing (not finite)."""
    return float(vertices(np.array([left]), np.array([mid]), np.array([right]))[0])


def vertices(left: np.ndarray, mid: np.ndarray, right: np.ndarray) -> np.ndarray:
    """:func:`vertex` of ``(K,)`` triples at once, float64."""
    left, mid, right = (np.asarray(v, np.float64) for v in (left, mid, right))
    sides = np.isfinite(left) & np.isfinite(right)
    curve = np.where(sides, left - 2.0 * mid + right, 0.0)
    bent = sides & (curve < -1e-12)
    peak = 0.5 * (np.where(bent, left, 0.0) - np.where(bent, right, 0.0)) / np.where(bent, curve, -1.0)
    return np.where(bent, np.clip(peak, -0.5, 0.5), 0.0)


@dataclass(frozen=True)
class Alignment:
    """Where ``b`` sits in ``a`` and how well it matches.

    Attributes:
        offset: frames; frame ``t`` of ``b`` lies on frame ``t + offset`` of ``a``.
        score: mean correlation of the aligned loud frames, -1..1.
        cells: reliable cells aligned on both sides.
        sharpness: the score minus the best score more than 2 frames away from ``offset``.
    """

    offset: int
    score: float
    cells: int
    sharpness: float
    fraction: float = 0.0

    @property
    def offset_s(self) -> float:
        return self.offset * HOP_S


def scores(a: Prepared, b: Prepared) -> tuple[np.ndarray, np.ndarray, int]:
    """Score and shared reliable cells of ``b`` placed at every offset in ``a``.

    Returns ``(score, cells, first)``: ``(Ta + Tb - 1,)`` float64 each; entry ``k`` is the
    offset ``k + first`` (``first = -(Tb - 1)``). Offsets with fewer than :data:`MIN_CELLS`
    cells score 0 and have 0 cells.
    """
    ta, tb = a.n_frames, b.n_frames
    if ta * tb <= DIRECT_CELLS:
        dot, na, nb, cells = _direct(a, b)
    else:
        from scipy.signal import fftconvolve, oaconvolve

        conv = oaconvolve if ta > 8 * tb else fftconvolve
        rb = slice(None, None, -1)
        dot = conv(a.d, b.d[rb], axes=0, mode="full").sum(axis=1)
        na = conv(a.d * a.d, b.w[rb], axes=0, mode="full").sum(axis=1)  # a's energy on cells both trust
        nb = conv(a.w, (b.d * b.d)[rb], axes=0, mode="full").sum(axis=1)
        cells = np.rint(conv(a.w, b.w[rb], axes=0, mode="full").sum(axis=1))
    # entry k is offset k - (tb - 1)
    den = np.sqrt(np.maximum(na, 0) * np.maximum(nb, 0))
    ok = (cells >= MIN_CELLS) & (den > 1e-3)
    score = np.where(ok, np.clip(dot / np.maximum(den, 1e-3), -1.0, 1.0), 0.0)
    return score, np.where(ok, cells, 0), -(tb - 1)


#: Pairs with at most this many frame pairs (``Ta * Tb``) are correlated directly (matrix
#: products and diagonal sums), larger ones by FFT; the direct way is ~20x faster for words.
DIRECT_CELLS = 250_000


@lru_cache(maxsize=256)
def _diagonals(ta: int, tb: int) -> np.ndarray:
    """``(ta * tb,)`` int64: the full-correlation entry (offset + tb - 1) of each (i, j) frame pair."""
    return (np.arange(ta)[:, None] - np.arange(tb)[None, :] + tb - 1).ravel()


def _direct(a: Prepared, b: Prepared) -> tuple[np.ndarray, ...]:
    ta, tb = a.n_frames, b.n_frames
    idx = _diagonals(ta, tb)
    n = ta + tb - 1
    out = []
    for x, y in ((a.d, b.d), (a.d * a.d, b.w), (a.w, b.d * b.d), (a.w, b.w)):
        out.append(np.bincount(idx, weights=(x @ y.T).ravel(), minlength=n))
    out[3] = np.rint(out[3])
    return tuple(out)


def align(a: Prepared, b: Prepared, min_cells: int = MIN_CELLS) -> Alignment | None:
    """Best offset of ``b`` inside ``a`` with at least ``min_cells`` reliable cells in common, or None."""
    if a.n_frames < 2 or b.n_frames < 2:
        return None
    score, cells, first = scores(a, b)
    score = np.where(cells >= max(min_cells, 1), score, -np.inf)
    k = int(np.argmax(score))
    if not np.isfinite(score[k]):
        return None
    away = np.abs(np.arange(score.size) - k) > 2
    rest = score[away & np.isfinite(score)]
    sharp = float(score[k] - rest.max()) if rest.size else float(score[k])
    side = [float(score[i]) if 0 <= i < score.size else -np.inf for i in (k - 1, k + 1)]
    return Alignment(k + first, float(score[k]), int(cells[k]), sharp, vertex(side[0], float(score[k]), side[1]))


def best_offsets(b: Prepared, hosts: list[Prepared], min_cells: int = MIN_CELLS
                 ) -> list[tuple[int, float, int, float] | None]:
    """:func:`align` of ``b`` inside every file of ``hosts`` at once: ``(offset, score, cells, fraction)``
    (as :class:`Alignment`) or None each.

    The hosts are stacked, each reversed in time and followed by ``Tb - 1`` zero frames, so
    one ``(Tb, W)`` matrix product per quantity gives every frame pair of every host; a
    strided view that shifts row ``j`` right by ``j`` columns turns its column sums into the
    full correlations (the zero frames keep the hosts apart; column ``p`` of a host of
    ``Ta`` frames is offset ``Ta - 1 - p``). ``b`` should be the shorter file: the work is
    ``Tb * sum(Ta + Tb)``. Same numbers as :func:`scores` to float32 rounding, and the same
    offset (the earliest of equal maxima), as :func:`align`.
    """
    tb = b.n_frames
    out: list[tuple[int, float, int, float] | None] = [None] * len(hosts)
    keep = [i for i, h in enumerate(hosts) if h.n_frames >= 2]
    if tb < 2 or not keep:
        return out
    ta = np.array([hosts[i].n_frames for i in keep])
    width = ta + tb - 1  # full-correlation length of each pair
    base = np.concatenate([[0], np.cumsum(width)[:-1]])
    total = int(width.sum())
    rows = np.arange(int(ta.sum())) + np.repeat(base - np.concatenate([[0], np.cumsum(ta)[:-1]]), ta)
    ad = np.zeros((total, b.d.shape[1]), np.float32)
    aw = np.zeros_like(ad)
    ad[rows] = np.concatenate([hosts[i].d[::-1] for i in keep])
    aw[rows] = np.concatenate([hosts[i].w[::-1] for i in keep])
    sums = []
    for x, y in ((b.d, ad), (b.w, ad * ad), (b.d * b.d, aw), (b.w, aw)):  # dot, a's energy, b's, cells
        g = x @ y.T  # (tb, total) float32, C order
        # row j shifted right by j: view[j, p] = g[j, p - j]; p - j < 0 reads the last host's zero frames.
        # Summed in float32 (a float64 sum of this strided view cost as much as the products): ``tb``
        # terms each already rounded to float32 by the product
        view = np.lib.stride_tricks.as_strided(g, (tb, total), ((total - 1) * g.itemsize, g.itemsize))
        sums.append(view.sum(axis=0).astype(np.float64))
    dot, na, nb, cells = sums
    cells = np.rint(cells)
    den = np.sqrt(np.maximum(na, 0) * np.maximum(nb, 0))
    ok = (cells >= max(MIN_CELLS, min_cells, 1)) & (den > 1e-3)
    score = np.where(ok, np.clip(dot / np.maximum(den, 1e-3), -1.0, 1.0), -np.inf)
    top = np.maximum.reduceat(score, base)
    pair = np.repeat(np.arange(len(keep)), width)
    hit = np.flatnonzero(score == top[pair])[::-1]  # the last column of a tie is the earliest offset
    first_pair, first_hit = np.unique(pair[hit], return_index=True)
    h = hit[first_hit]
    found = np.isfinite(score[h])
    k, h = first_pair[found], h[found]
    lo, hi = base[k], base[k] + width[k]
    padded = np.r_[-np.inf, score, -np.inf]  # padded[i + 1] = score[i]
    before = np.where(h + 1 < hi, padded[h + 2], -np.inf)  # offset - 1 (the next column)
    after = np.where(h - 1 >= lo, padded[h], -np.inf)  # offset + 1
    fraction = vertices(before, score[h], after)
    for kk, hh, frac in zip(k.tolist(), h.tolist(), fraction.tolist()):
        out[keep[kk]] = (int(ta[kk]) - 1 - (hh - int(base[kk])), float(score[hh]), int(cells[hh]), frac)
    return out


#: Fewest reliable band levels shared for :func:`fine_match` to judge the levels of a pair.
MIN_BAND_CELLS = 16
#: Frames of ``b`` times hosts read at once by the batched readings (:func:`fine_matches`,
#: :func:`level_errors`, :func:`gains_db`, :func:`loud_spans`): bounds their memory to a few
#: float64 arrays of this many frames times the bands (about 16 MB each).
READ_BATCH_FRAMES = 1 << 17


def _batches(tb: int, k: int) -> list[slice]:
    """Slices of ``k`` hosts, each holding at most :data:`READ_BATCH_FRAMES` frames of a ``tb``-frame file."""
    step = max(1, READ_BATCH_FRAMES // max(tb, 1))
    return [slice(i, i + step) for i in range(0, k, step)]


def _stack(hosts: list[Prepared], name: str) -> np.ndarray:
    """One field of ``hosts`` concatenated in time (no copy for a single host)."""
    parts = [getattr(h, name) for h in hosts]
    if any(p is None for p in parts):
        raise ValueError(f"the batched readings need Prepared frames with {name} (from prepare())")
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class Hosts:
    """Files one file is read in at once (:func:`fine_matches`, :func:`level_errors`, :func:`gains_db`,
    :func:`loud_spans`): their :class:`Prepared` fields concatenated in time, each on first use and
    once for every :meth:`take` of them.

    Attributes:
        start: ``(K,)`` int64, each file's first row in the concatenation.
        frames: ``(K,)`` int64, each file's frames.
    """

    def __init__(self, hosts: list[Prepared], start: np.ndarray | None = None, frames: np.ndarray | None = None,
                 cache: dict[str, np.ndarray] | None = None) -> None:
        self._hosts = hosts
        self.frames = np.array([h.n_frames for h in hosts], np.int64) if frames is None else frames
        self.start = np.concatenate([[0], np.cumsum(self.frames)[:-1]]).astype(np.int64) if start is None else start
        self._cache: dict[str, np.ndarray] = {} if cache is None else cache

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def field(self, name: str) -> np.ndarray:
        """``(sum of all files' frames, ...)``: one :class:`Prepared` field of every file, concatenated."""
        if name not in self._cache:
            self._cache[name] = _stack(self._hosts, name)
        return self._cache[name]

    def take(self, which: np.ndarray | slice) -> Hosts:
        """Some of these files (an index array or a slice), sharing the concatenation."""
        return Hosts(self._hosts, self.start[which], self.frames[which], self._cache)


def _hosts(hosts: Hosts | list[Prepared]) -> Hosts:
    """``hosts`` as :class:`Hosts` (a list is concatenated on first use)."""
    return hosts if isinstance(hosts, Hosts) else Hosts(hosts)


def _place(tb: int, hosts: Hosts, offsets: np.ndarray, fractional: bool
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where ``b``'s ``tb`` frames fall in each host, at ``(K,)`` offsets (frames).

    Returns ``(g0, g1, f, inside)``, each ``(K, tb)``: rows of the hosts' concatenation
    (:meth:`Hosts.field`) read below and above (int64, clipped into the host), the fraction of the
    way to ``g1`` (float64, 0 for whole-frame offsets), and whether frame ``t`` of ``b`` lands
    in the host (both rows, when ``fractional``).
    """
    ta, base = hosts.frames[:, None], hosts.start[:, None]
    pos = np.arange(tb)[None, :] + np.asarray(offsets, np.float64)[:, None]
    last = np.maximum(ta - 1, 0)
    if fractional:
        i0 = np.floor(pos + 1e-9).astype(np.int64)
        inside = (i0 >= 0) & (i0 + 1 < ta)
        f = np.where(inside, np.clip(pos - i0, 0.0, 1.0), 0.0)
    else:
        i0 = np.rint(pos).astype(np.int64)
        inside = (i0 >= 0) & (i0 < ta)
        f = np.zeros(pos.shape)
    return base + np.clip(i0, 0, last), base + np.clip(i0 + 1, 0, last), f, inside


def _sorted_medians(rows: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``(K,)`` medians of ``(K, N)`` rows sorted with NaN last, row ``k`` holding ``n[k] >= 1`` values."""
    r = np.arange(rows.shape[0])
    return (rows[r, (n - 1) // 2] + rows[r, n // 2]) / 2


def _mean_deviation(diff: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """``(K, N)`` values and mask -> ``(K,)`` mean absolute deviation from the median over the masked
    values of each row (``inf`` under :data:`MIN_BAND_CELLS` of them)."""
    count = ok.sum(axis=1)
    out = np.full(diff.shape[0], np.inf)
    has = count >= MIN_BAND_CELLS
    if has.any():
        f = np.sort(np.where(ok[has], diff[has], np.nan), axis=1)  # NaN last
        n = count[has]
        dev = np.abs(f - _sorted_medians(f, n)[:, None])
        out[has] = np.where(np.isfinite(dev), dev, 0.0).sum(axis=1) / n
    return out


def _level_error(b: Prepared, hosts: Hosts, g0: np.ndarray, g1: np.ndarray, f: np.ndarray,
                 inside: np.ndarray, fractional: bool = True) -> np.ndarray:
    """``(K,)`` level error (see :func:`fine_match`) of ``b`` read at the placement ``(g0, g1, f, inside)``
    (:func:`_place`; without ``fractional``, whole frames: ``g1`` and ``f`` are not read)."""
    bands, band_ok = hosts.field("bands_db"), hosts.field("band_ok")
    if b.bands_db is None or b.band_ok is None:
        raise ValueError("the batched readings need Prepared frames with band levels (from prepare())")
    if fractional:
        f3, frac = f[..., None], (f > 1e-9)[..., None]
        ok = band_ok[g0] & np.where(frac, band_ok[g1], True) & b.band_ok[None] & inside[..., None]
        diff = (1.0 - f3) * bands[g0] + f3 * bands[g1] - b.bands_db[None]
    else:
        ok = band_ok[g0] & b.band_ok[None] & inside[..., None]
        diff = bands[g0].astype(np.float64) - b.bands_db[None]
    k = g0.shape[0]
    return _mean_deviation(diff.reshape(k, -1), ok.reshape(k, -1))


def fine_matches(b: Prepared, hosts: Hosts | list[Prepared], offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fine_match` of ``b`` in every host at once, at ``(K,)`` fractional offsets (frames):
    ``(correlation (K,), level error dB (K,))`` float64."""
    hosts = _hosts(hosts)
    k, tb = len(hosts), b.n_frames
    corr, error = np.full(k, -np.inf), np.full(k, np.inf)
    offsets = np.asarray(offsets, np.float64)
    for sl in _batches(tb, k):
        hs = hosts.take(sl)
        g0, g1, f, inside = _place(tb, hs, offsets[sl], fractional=True)
        d, w = hs.field("d"), hs.field("w")
        f3, frac, in3 = f[..., None], (f > 1e-9)[..., None], inside[..., None]
        ad = np.where(in3, (1.0 - f3) * d[g0] + f3 * d[g1], 0.0)
        ww = w[g0] * np.where(frac, w[g1], 1.0) * b.w[None] * in3
        bd = b.d[None] * ww
        dot, na = (ad * bd).sum(axis=(1, 2)), (ad * ad * ww).sum(axis=(1, 2))
        nb, cells = (bd * bd).sum(axis=(1, 2), dtype=np.float64), ww.sum(axis=(1, 2), dtype=np.float64)
        den = np.sqrt(np.maximum(na, 0.0) * nb)
        ok = (cells >= MIN_CELLS) & (den > 1e-3)
        corr[sl] = np.where(ok, np.clip(dot / np.maximum(den, 1e-3), -1.0, 1.0), -np.inf)
        error[sl] = _level_error(b, hs, g0, g1, f, inside)
    return corr, error


def fine_match(a: Prepared, b: Prepared, offset: float) -> tuple[float, float]:
    """``b`` read against ``a`` at a fractional ``offset`` (frames): ``(correlation, level error dB)``.

    A copy starts anywhere between two frames (a trim, padding, a codec's delay of any
    number of samples): at half a hop it lost up to 0.12 of its whole-frame correlation on
    FSDD words. ``a`` is read between its frames by linear interpolation (second differences
    and dB levels both), a cell counting where both frames it is read from are reliable;
    the offset comes from the parabola through the whole-frame scores (:func:`vertex`).

    The correlation is that of :func:`scores` over the cells both trust (``-inf`` under
    :data:`MIN_CELLS`). The level error is the mean absolute difference of the band levels
    after their median difference (the gain) is removed, over levels reliable on both sides:
    the same recording reproduces its band levels up to a gain within a codec's or added
    noise's error (0.5-1 dB on FSDD's tuning speakers); another take of the same word by the
    same speaker, however well its timing correlates, differs by 1.5 dB or more (``inf``
    under :data:`MIN_BAND_CELLS`). One host of :func:`fine_matches`.
    """
    if a.bands_db is None or b.bands_db is None or a.band_ok is None or b.band_ok is None:
        raise ValueError("fine_match needs Prepared frames with band levels (from prepare())")
    corr, error = fine_matches(b, [a], np.array([offset], np.float64))
    return float(corr[0]), float(error[0])


def level_errors(b: Prepared, hosts: Hosts | list[Prepared], offsets: np.ndarray | list[int]) -> np.ndarray:
    """``(len(hosts),)`` float64: :func:`fine_match`'s level error of ``b`` at whole-frame ``offsets[k]`` in
    ``hosts[k]``, all at once (``inf`` under :data:`MIN_BAND_CELLS` shared levels). A cheap first look
    that spares most pairs the fractional reading."""
    hosts = _hosts(hosts)
    out = np.full(len(hosts), np.inf)
    if b.bands_db is None or b.band_ok is None or not len(hosts):
        return out
    offsets_f = np.asarray(offsets, np.float64)
    for sl in _batches(b.n_frames, len(hosts)):
        hs = hosts.take(sl)
        g0, g1, f, inside = _place(b.n_frames, hs, offsets_f[sl], fractional=False)
        out[sl] = _level_error(b, hs, g0, g1, f, inside, fractional=False)
    return out


def _both_loud(b: Prepared, hosts: Hosts, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(both (K, Tb) bool, g (K, Tb) int64)``: frames of ``b`` loud in both files at whole-frame
    ``offsets``, and the hosts' concatenated rows they lie on."""
    g, _, _, inside = _place(b.n_frames, hosts, offsets, fractional=False)
    return inside & (hosts.field("loud")[g] > 0) & (b.loud[None] > 0), g


def loud_readings(b: Prepared, hosts: Hosts | list[Prepared], offsets: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`gains_db` and :func:`loud_spans` at once: ``(gain (K,) float64, b0 (K,), b1 (K,) int64)``."""
    hosts = _hosts(hosts)
    tb, k = b.n_frames, len(hosts)
    gain, b0, b1 = np.zeros(k), np.zeros(k, np.int64), np.full(k, tb, np.int64)
    for sl in _batches(tb, k):
        hs = hosts.take(sl)
        both, g = _both_loud(b, hs, np.asarray(offsets, np.float64)[sl])
        count = both.sum(axis=1)
        has = count > 0
        if has.any():
            diff = np.where(both, b.level_db[None].astype(np.float64) - hs.field("level_db")[g], np.nan)
            gain[np.flatnonzero(has) + sl.start] = _sorted_medians(np.sort(diff[has], axis=1), count[has])
        first, last = np.argmax(both, axis=1), tb - 1 - np.argmax(both[:, ::-1], axis=1)
        b0[sl] = np.where(has, first - 1, 0)
        b1[sl] = np.where(has, last + 1, tb)
    return gain, b0, b1


def gains_db(b: Prepared, hosts: Hosts | list[Prepared], offsets: np.ndarray) -> np.ndarray:
    """``(K,)`` float64: :func:`gain_db` of ``b`` in every host at once, at whole-frame ``offsets``."""
    return loud_readings(b, hosts, offsets)[0]


def gain_db(a: Prepared, b: Prepared, offset: int) -> float:
    """Median level of ``b`` minus ``a`` (dB) over the frames both have loud at ``offset``."""
    return float(gains_db(b, [a], np.array([offset], np.float64))[0])


def loud_spans(b: Prepared, hosts: Hosts | list[Prepared], offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(b0, b1)``, ``(K,)`` int64 each: the frames ``[b0, b1)`` of ``b`` from the frame before its first
    loud frame shared with each host (at whole-frame ``offsets``) to the frame after its last, or
    ``(0, Tb)`` where none is shared (a loud frame's difference also reads the frame before)."""
    _, b0, b1 = loud_readings(b, hosts, offsets)
    return b0, b1
