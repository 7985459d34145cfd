"""Localisation benchmark: find known clips planted at known times in long recordings.

Protocol (seeded; ``docs/bench_locate.md`` holds one run's numbers and the conclusions):

* **Long files.** 60 s at FSDD's 8 kHz: FSDD recordings of five speakers one after
  another with 0.1-0.6 s pauses, every recording at the same RMS (background ones by a
  further random -3..+3 dB), white noise ``--snr`` dB below that through the whole file,
  and the query planted ``--events`` times at random times with 0.05-0.3 s of clearance
  from the speech. The query is either a *word* (an FSDD recording by the sixth
  speaker) or a *sound* (a synthetic chirp, click train or beep). Without FSDD, seeded
  vowels stand in for the speech.
* **Reference events** are the planted spans ``[onset, onset + clip length)``; the query
  is the clean clip.
* **Locate** runs through the public API (``retrieval.locate.locate_curve``) with the
  logmel encoder, once per configuration (pooling x window, with and without the
  per-file standardisation). The encoder is wrapped in a cache of frame embeddings so
  the configurations of one file share an encoder pass; vectors, curves and events
  are exactly those of separate calls.
* **Event-based metrics** (after DCASE / sed_eval, implemented here): an estimated event
  matches a reference when their onsets are within the 200 ms collar (``F1 onset``);
  ``F1 on+off`` also needs the offsets within max(200 ms, half the reference's length).
  Matching is one-to-one and maximises the number of matches (Hungarian algorithm, ties
  broken by onset distance). Onset and offset errors are over the onset-matched pairs.
* **Visibility**, independent of any threshold: the planted events' peak scores in
  robust standard deviations above the curve's median (``peak z``), and the weakest
  event's peak minus the highest score away from every event (``margin``, same units;
  positive means some threshold separates every copy from everything else).
* The default configuration's curves are then re-thresholded with textbook rules, and
  the default and mean-pooling curves re-edged with other edge rules, for comparison.

Usage: ``python scripts/bench_locate.py [--trials 12 --sound-trials 8 --events 3 --snr 20 --seed 0]``
(constants in ``retrieval/locate`` were chosen with ``--seed 100`` and ``--seed 200``; the
report uses ``--seed 0``).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.optimize import linear_sum_assignment

from retrieval import synth
from retrieval.encoders import build
from retrieval.encoders.base import FrameEmbeddings
from retrieval.locate import locate_curve
from retrieval.locate.events import Threshold, adaptive_threshold, detect

ROOT = Path(__file__).resolve().parents[1]
FSDD = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"
DOC = ROOT / "docs" / "bench_locate.md"
SR = 8000
LEVEL_RMS = 0.05
COLLAR_S = 0.2
#: MAD -> standard deviation for Gaussian data.
MAD_TO_SIGMA = 1.4826


# -- data ------------------------------------------------------------------------------------


@dataclass
class Trial:
    """One long file with its query and the planted reference events (seconds)."""

    long_path: Path
    query_path: Path
    query_name: str
    refs: np.ndarray  # (k, 2) float64 [onset, offset)
    duration_s: float


def _rms_scale(x: np.ndarray, rms: float) -> np.ndarray:
    return (x * (rms / max(float(np.sqrt(np.mean(x.astype(np.float64) ** 2))), 1e-9))).astype(np.float32)


def _pool() -> dict[str, list[Path]] | None:
    """FSDD recordings by speaker, or None when FSDD is absent."""
    if not FSDD.is_dir():
        return None
    out: dict[str, list[Path]] = {}
    for p in sorted(FSDD.glob("*.wav")):
        out.setdefault(p.stem.split("_")[1], []).append(p)
    return out


def _synthetic_word(rng: np.random.Generator) -> np.ndarray:
    """A speech-like stand-in (a vowel), for the background when FSDD is absent."""
    dur = float(rng.uniform(0.3, 0.8))
    return synth.vowel(rng.uniform(90, 220), (rng.uniform(300, 900), rng.uniform(900, 2500)), dur, SR)


def _synthetic_sound(rng: np.random.Generator) -> np.ndarray:
    """A non-speech event: a chirp, a click train or a two-tone beep, 0.3-0.8 s."""
    dur = float(rng.uniform(0.3, 0.8))
    kind = int(rng.integers(3))
    if kind == 0:
        f0 = rng.uniform(300, 1500)
        return synth.chirp(f0, min(f0 * rng.uniform(1.5, 3.0), 3500), dur, SR)
    if kind == 1:
        return synth.clicks(rng.uniform(8, 20), dur, SR, seed=int(rng.integers(1 << 30)))
    f = rng.uniform(400, 1600)
    return (synth.sine(f, dur, SR) + synth.sine(1.5 * f, dur, SR)) / 2


def make_trial(rng: np.random.Generator, pool: dict[str, list[Path]] | None, folder: Path, index: int,
               n_events: int, snr_db: float, event: str = "word", duration_s: float = 60.0) -> Trial:
    """Write one long file and its query to ``folder``; see the module docstring.

    ``event`` is ``word`` (an FSDD recording by a speaker absent from the background) or
    ``sound`` (a synthetic chirp, click train or beep).
    """
    speaker = None
    if event == "word" and pool is not None:
        speaker = sorted(pool)[int(rng.integers(len(pool)))]
        qpath = pool[speaker][int(rng.integers(len(pool[speaker])))]
        query = _rms_scale(sf.read(qpath, dtype="float32")[0], LEVEL_RMS)
        name = qpath.stem
    else:
        query = _rms_scale(_synthetic_sound(rng) if event == "sound" else _synthetic_word(rng), LEVEL_RMS)
        name = f"{event}_{index}"
    if pool is not None:
        others = [p for s, ps in pool.items() if s != speaker for p in ps]

        def background() -> np.ndarray:
            clip = sf.read(others[int(rng.integers(len(others)))], dtype="float32")[0]
            return _rms_scale(clip, LEVEL_RMS * 10 ** (rng.uniform(-3, 3) / 20))
    else:

        def background() -> np.ndarray:
            return _rms_scale(_synthetic_word(rng), LEVEL_RMS * 10 ** (rng.uniform(-3, 3) / 20))
    n = int(duration_s * SR)
    q = len(query)
    # Event onsets: spread over the file, at least 1.5 clip lengths apart.
    while True:
        onsets = np.sort(rng.integers(0, n - q, n_events))
        if n_events < 2 or np.min(np.diff(onsets)) > 1.5 * q + SR:
            break
    clear = [(int(a - rng.uniform(0.05, 0.3) * SR), int(a + q + rng.uniform(0.05, 0.3) * SR)) for a in onsets]
    out = np.zeros(n, np.float32)
    pos = 0
    while pos < n:
        pos += int(rng.uniform(0.1, 0.6) * SR)
        clip = background()
        blocked = [c for c in clear if pos < c[1] and pos + len(clip) > c[0]]
        if blocked:
            pos = max(c[1] for c in blocked)
            continue
        seg = clip[: max(n - pos, 0)]
        out[pos:pos + len(seg)] += seg
        pos += len(clip)
    for a in onsets:
        out[a:a + q] += query[: n - a]
    out += (LEVEL_RMS * 10 ** (-snr_db / 20) * rng.standard_normal(n)).astype(np.float32)
    long_path = folder / f"long_{index:02d}.wav"
    query_path = folder / f"query_{index:02d}.wav"
    sf.write(long_path, np.clip(out, -1, 1), SR, subtype="PCM_16")
    sf.write(query_path, query, SR, subtype="PCM_16")
    refs = np.stack([onsets / SR, (onsets + q) / SR], axis=1)
    return Trial(long_path, query_path, name, refs, duration_s)


# -- metrics -----------------------------------------------------------------------------------


def match(refs: np.ndarray, est: np.ndarray, offsets: bool) -> list[tuple[int, int]]:
    """One-to-one matching with the most matches (ties: smallest onset distance).

    A pair is valid when the onsets are within :data:`COLLAR_S`, and with ``offsets`` also
    the offsets within ``max(COLLAR_S, 0.5 * reference length)``.
    """
    if len(refs) == 0 or len(est) == 0:
        return []
    d_on = np.abs(refs[:, None, 0] - est[None, :, 0])
    ok = d_on <= COLLAR_S
    if offsets:
        collar = np.maximum(COLLAR_S, 0.5 * (refs[:, 1] - refs[:, 0]))[:, None]
        ok &= np.abs(refs[:, None, 1] - est[None, :, 1]) <= collar
    cost = np.where(ok, d_on, 1e6)
    rows, cols = linear_sum_assignment(cost)
    return [(r, c) for r, c in zip(rows, cols) if ok[r, c]]


@dataclass
class Tally:
    """Counts and errors of one configuration over all trials."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tp_off: int = 0
    onset_err: list[float] = field(default_factory=list)
    offset_err: list[float] = field(default_factory=list)
    peak_z: list[float] = field(default_factory=list)
    margin: list[float] = field(default_factory=list)

    def add(self, trial: Trial, est: np.ndarray, curve_t: np.ndarray, scores: np.ndarray, half_window: float) -> None:
        pairs = match(trial.refs, est, offsets=False)
        self.tp += len(pairs)
        self.fp += len(est) - len(pairs)
        self.fn += len(trial.refs) - len(pairs)
        self.tp_off += len(match(trial.refs, est, offsets=True))
        for r, e in pairs:
            self.onset_err.append(float(est[e, 0] - trial.refs[r, 0]))
            self.offset_err.append(float(est[e, 1] - trial.refs[r, 1]))
        med = float(np.median(scores))
        sd = max(MAD_TO_SIGMA * float(np.median(np.abs(scores - med))), 1e-9)
        near = np.zeros(len(scores), bool)
        peaks = []
        for a, b in trial.refs:  # windows centred within half a window of the event, or inside it
            inside = (curve_t >= a - half_window) & (curve_t <= b + half_window)
            near |= inside
            peaks.append(float(scores[inside].max()))
        self.peak_z.extend((p - med) / sd for p in peaks)
        self.margin.append((min(peaks) - float(scores[~near].max())) / sd if (~near).any() else float("nan"))

    def row(self) -> dict[str, Any]:
        f1 = lambda tp: 2 * tp / max(2 * tp + (self.tp + self.fp - tp) + (self.tp + self.fn - tp), 1)  # noqa: E731
        on, off = np.abs(self.onset_err), np.abs(self.offset_err)
        return {
            "F1 onset": f1(self.tp), "F1 on+off": f1(self.tp_off),
            "P": self.tp / max(self.tp + self.fp, 1), "R": self.tp / max(self.tp + self.fn, 1),
            "onset med": float(np.median(on)) if on.size else float("nan"),
            "onset mean": float(on.mean()) if on.size else float("nan"),
            "onset bias": float(np.median(self.onset_err)) if on.size else float("nan"),
            "offset med": float(np.median(off)) if off.size else float("nan"),
            "offset mean": float(off.mean()) if off.size else float("nan"),
            "peak z": float(np.median(self.peak_z)), "margin": float(np.median(self.margin)),
            "sep": int(np.sum(np.asarray(self.margin) > 0)), "trials": len(self.margin),
        }


# -- a cache of frame embeddings, so poolings share one encoder pass -----------------------------


class CachedEncoder:
    """Wraps an encoder; identical batches return the stored frames (numbers are unchanged)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.sample_rate, self.dim = inner.name, inner.sample_rate, inner.dim
        self.has_text = inner.has_text
        self.default_window_s, self.default_hop_s = inner.default_window_s, inner.default_hop_s
        self.default_pooling = inner.default_pooling
        self._cache: dict[tuple[bytes, bytes], FrameEmbeddings] = {}

    def recipe(self) -> dict[str, Any]:
        return self.inner.recipe()

    def frame_embeddings(self, audio: np.ndarray, lengths: np.ndarray) -> FrameEmbeddings:
        import hashlib

        key = (hashlib.blake2b(np.ascontiguousarray(audio).tobytes(), digest_size=16).digest(),
               np.asarray(lengths, np.int64).tobytes())
        if key not in self._cache:
            self._cache[key] = self.inner.frame_embeddings(audio, lengths)
        return self._cache[key]

    def clear(self) -> None:
        self._cache.clear()


# -- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    label: str
    pooling: str
    window_s: float | None  # None: the clip's length
    hop_s: float | None = None
    standardize: bool = True


CONFIGS = [
    Config("default: pyramid, clip window", "pyramid", None),
    Config("mean, clip window", "mean", None),
    Config("max, clip window", "max", None),
    Config("meanmax, clip window", "meanmax", None),
    Config("meanstd, clip window", "meanstd", None),
    Config("pyramid, clip window, no standardize", "pyramid", None, standardize=False),
    Config("mean, clip window, no standardize", "mean", None, standardize=False),
    Config("pyramid, 2 s window", "pyramid", 2.0, 0.25),
    Config("mean, 2 s window", "mean", 2.0, 0.25),
    Config("max, 2 s window", "max", 2.0, 0.25),
    Config("meanmax, 2 s window", "meanmax", 2.0, 0.25),
    Config("meanstd, 2 s window", "meanstd", 2.0, 0.25),
]


#: Configurations whose curves are kept to compare threshold and edge rules afterwards.
KEEP = (CONFIGS[0].label, CONFIGS[1].label)


@dataclass
class Stored:
    """One configuration's curve for one trial."""

    label: str
    trial: Trial
    windows: np.ndarray
    scores: np.ndarray
    sample_rate: int
    window_s: float


def run(trials: int, events: int, snr_db: float, seed: int, event: str, configs: list[Config],
        log: Callable[[str], None] = print) -> tuple[dict[str, Tally], list[Stored], dict[str, Any]]:
    """Locate with every configuration in ``trials`` seeded long files; returns tallies, default curves, facts."""
    rng = np.random.default_rng(seed)
    pool = _pool()
    encoder = CachedEncoder(build("logmel"))
    tallies = {c.label: Tally() for c in configs}
    stored: list[Stored] = []
    t_start = time.perf_counter()
    default_s = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(trials):
            trial = make_trial(rng, pool, Path(tmp), i, events, snr_db, event)
            encoder.clear()
            for j, c in enumerate(configs):
                t0 = time.perf_counter()
                got = locate_curve(trial.query_path, trial.long_path, encoder=encoder, pooling=c.pooling,
                                   window_s=c.window_s, hop_s=c.hop_s, standardize=c.standardize)
                if j == 0:
                    default_s += time.perf_counter() - t0
                if c.label in KEEP:
                    stored.append(Stored(c.label, trial, got.curve.windows, got.curve.scores.astype(np.float64),
                                         got.curve.sample_rate, got.events.attrs["window_s"]))
                ev = got.events[["start_s", "end_s"]].to_numpy()
                curve_t = got.curve.windows.mean(axis=1) / got.curve.sample_rate
                tallies[c.label].add(trial, ev, curve_t, got.curve.scores.astype(np.float64),
                                     got.events.attrs["window_s"] / 2)
            log(f"{event} trial {i + 1}/{trials}: {trial.query_name} ({trial.refs[0, 1] - trial.refs[0, 0]:.2f} s) "
                "at " + ", ".join(f"{a:.2f}" for a in trial.refs[:, 0]) + " s")
    meta = {"trials": trials, "events": events, "snr_db": snr_db, "seed": seed, "event": event,
            "data": "FSDD" if pool else "synthetic (FSDD absent)", "wall_s": time.perf_counter() - t_start,
            "default_realtime": trials * 60.0 / max(default_s, 1e-9)}
    return tallies, stored, meta


# -- threshold rules on the default curves ---------------------------------------------------------


def _otsu(s: np.ndarray) -> float:
    hist, edges = np.histogram(s, 256)
    mids = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    m0 = np.cumsum(hist * mids)
    w1 = w0[-1] - w0
    between = np.where((w0 > 0) & (w1 > 0), (m0[-1] * w0 / w0[-1] - m0) ** 2 / np.maximum(w0 * w1, 1), 0)
    return float(mids[int(np.argmax(between))])


def _mad_rule(k: float) -> Callable[[np.ndarray, np.ndarray], float]:
    def rule(windows: np.ndarray, s: np.ndarray) -> float:
        med = float(np.median(s))
        return med + k * MAD_TO_SIGMA * float(np.median(np.abs(s - med)))
    return rule


def _share_rule(share: float) -> Callable[[np.ndarray, np.ndarray], float]:
    def rule(windows: np.ndarray, s: np.ndarray) -> float:
        med = float(np.median(s))
        return med + share * (float(s.max()) - med)
    return rule


RULES: list[tuple[str, Callable[[np.ndarray, np.ndarray], float]]] = [
    ("adaptive (default): largest drop among tall peaks", lambda w, s: adaptive_threshold(w, s).value),
    ("median + 3 MAD-sigma", _mad_rule(3.0)),
    ("median + 5 MAD-sigma", _mad_rule(5.0)),
    ("Otsu over all windows", lambda w, s: _otsu(s)),
    ("median + 0.5 x peak height", _share_rule(0.5)),
    ("median + 0.75 x peak height", _share_rule(0.75)),
]


def _score(stored: list[Stored], label: str, events: Callable[[Stored], np.ndarray]) -> Tally:
    tally = Tally()
    for st in stored:
        if st.label == label:
            tally.add(st.trial, events(st) / st.sample_rate, st.windows.mean(axis=1) / st.sample_rate,
                      st.scores, st.window_s / 2)
    return tally


def compare_rules(stored: list[Stored]) -> dict[str, Tally]:
    """Re-run the event stages on the default curves with each threshold rule."""
    def events(rule: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[Stored], np.ndarray]:
        def run(st: Stored) -> np.ndarray:
            thr = Threshold(rule(st.windows, st.scores), float(np.median(st.scores)), "")
            return detect(st.windows, st.scores, thr, int(round(st.window_s * st.sample_rate / 2)), 0).intervals
        return run
    return {label: _score(stored, KEEP[0], events(rule)) for label, rule in RULES}


def _crossing_edges(st: Stored, half: bool) -> np.ndarray:
    """Edges where the curve, read at window centres, crosses T (or half the event's height), by interpolation."""
    w, s = st.windows, st.scores
    thr = adaptive_threshold(w, s)
    c = w.mean(axis=1)
    out = []
    active = np.concatenate([[False], s > thr.value, [False]])
    for a, b in zip(np.flatnonzero(~active[:-1] & active[1:]), np.flatnonzero(active[:-1] & ~active[1:])):
        level = min(thr.value, (thr.background + s[a:b].max()) / 2) if half else thr.value
        while a > 0 and s[a - 1] > level:
            a -= 1
        while b < len(s) and s[b] > level:
            b += 1
        lo = 0 if a == 0 else c[a - 1] + (level - s[a - 1]) / (s[a] - s[a - 1]) * (c[a] - c[a - 1])
        hi = w[-1, 1] if b == len(s) else c[b - 1] + (s[b - 1] - level) / (s[b - 1] - s[b]) * (c[b] - c[b - 1])
        out.append((lo, hi))
    return np.array(out).reshape(-1, 2)


EDGE_RULES: list[tuple[str, Callable[[Stored], np.ndarray]]] = [
    ("best window (default, near_peak=1)", lambda st: detect(
        st.windows, st.scores, adaptive_threshold(st.windows, st.scores), 0, 0).intervals),
    ("windows within 5 % of the peak (near_peak=0.95)", lambda st: detect(
        st.windows, st.scores, adaptive_threshold(st.windows, st.scores), 0, 0, near_peak=0.95).intervals),
    ("threshold crossing at window centres", lambda st: _crossing_edges(st, half=False)),
    ("half-height crossing at window centres", lambda st: _crossing_edges(st, half=True)),
]


def compare_edges(stored: list[Stored]) -> dict[str, Tally]:
    """Each edge rule on the kept curves (default pooling and mean pooling), same threshold."""
    return {f"{rule}; {label.split(',')[0].replace('default: ', '')}": _score(stored, label, events)
            for label in KEEP for rule, events in EDGE_RULES}


# -- report ----------------------------------------------------------------------------------------


COLS = [("F1 onset", "{:.2f}"), ("F1 on+off", "{:.2f}"), ("P", "{:.2f}"), ("R", "{:.2f}"),
        ("onset med", "{:.3f}"), ("onset mean", "{:.3f}"), ("onset bias", "{:+.3f}"),
        ("offset med", "{:.3f}"), ("offset mean", "{:.3f}"), ("peak z", "{:.1f}"), ("margin", "{:+.1f}"),
        ("sep", "{}")]
RULE_COLS = ["F1 onset", "P", "R", "onset mean"]
EDGE_COLS = ["F1 onset", "F1 on+off", "onset mean", "onset bias", "offset mean"]


def table(tallies: dict[str, Tally], cols: list[str] | None = None, first: str = "configuration") -> list[str]:
    use = [(c, f) for c, f in COLS if cols is None or c in cols]
    header = [first] + [c for c, _ in use]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for label, t in tallies.items():
        r = t.row()
        cells = [f"{r['sep']}/{r['trials']}" if c == "sep" else fmt.format(r[c]) for c, fmt in use]
        lines.append("| " + " | ".join([label] + cells) + " |")
    return lines


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores visible (shared with other work), Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12, help="Long files with a spoken-word query.")
    ap.add_argument("--sound-trials", type=int, default=8, help="Long files with a synthetic-sound query.")
    ap.add_argument("--events", type=int, default=3)
    ap.add_argument("--snr", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-doc", action="store_true", help="Print only; do not rewrite docs/bench_locate.md.")
    args = ap.parse_args()
    t0 = time.perf_counter()
    blocks: list[str] = []
    for event, trials, title in (("word", args.trials, "A spoken word (FSDD) in other speakers' speech"),
                                 ("sound", args.sound_trials, "A synthetic sound (chirp, clicks, beep) in speech")):
        if trials <= 0:
            continue
        tallies, stored, meta = run(trials, args.events, args.snr, args.seed, event, CONFIGS)
        lines = [f"### {title}", "",
                 f"{meta['data']} background; {trials} files x 60 s, {args.events} planted copies each "
                 f"({trials * args.events} events), SNR {args.snr:g} dB, seed {args.seed}. Default configuration: "
                 f"{meta['default_realtime']:.0f}x realtime end to end (decode, encoder, pooling, scoring, events); "
                 "the other rows reuse its frames.", "", *table(tallies)]
        lines += ["", "Threshold rules on the default configuration's curves (same edges):", "",
                  *table(compare_rules(stored), RULE_COLS, "threshold rule"),
                  "", "Edge rules on the curves of pyramid (default) and mean pooling (same threshold):", "",
                  *table(compare_edges(stored), EDGE_COLS, "edge rule; pooling")]
        blocks.append("\n".join(lines))
        print("\n" + "\n".join(lines), flush=True)
    wall = time.perf_counter() - t0
    print(f"\n{wall:.0f} s wall on {machine()}")
    if not args.no_doc:
        write_doc("\n\n".join(blocks) + f"\n\nWhole run: {wall:.0f} s on {machine()}.")


def write_doc(block: str) -> None:
    """Replace the results block of ``docs/bench_locate.md`` (between the markers) with this run."""
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    block = f"{start}\n\n{block}\n\n{end}"
    text = DOC.read_text() if DOC.is_file() else f"# Localisation benchmark\n\n{start}\n{end}\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text += "\n" + block + "\n"
    DOC.write_text(text)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
