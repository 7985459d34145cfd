"""Benchmark the spectral baseline's variants on FSDD and write docs/bench_baseline.md.

Protocol: one vector per file (frames -> window pooling -> file pooling, exactly as
ingest does it, with the logmel encoder's default 4 s window), post-processing fitted
on all 3,000 files, then leave-one-out kNN on ``digit`` with every neighbour from the
query's own speaker excluded (``group = speaker``). Each file is decoded once with
``retrieval.audio.load(path, 16000)``; frames are cached in memory per front-end
setting.

    python scripts/bench_baseline.py [--data ../shared/data/fsdd] [--out docs/bench_baseline.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retrieval.audio import load, plan_windows, to_samples
from retrieval.encoders.base import EncoderOptions
from retrieval.encoders.logmel import LogMelConfig, LogMelEncoder
from retrieval.evaluate import evaluate
from retrieval.pooling import pool_file, pool_windows
from retrieval.postprocess import DEFAULT_SHRINKAGE, Postprocess
from retrieval.probe import linear_probe
from retrieval.report import markdown_table

ROOT = Path(__file__).resolve().parents[1]
SR = LogMelEncoder.sample_rate

#: Front-end settings tried (name -> LogMelConfig overrides); "default" is LogMelConfig().
FRONTENDS: dict[str, dict[str, Any]] = {
    "logmel raw": {"feature": "logmel", "norm": "none", "trim_db": None},
    "logmel cmn": {"feature": "logmel", "norm": "cmn", "trim_db": None},
    "mfcc+d cmn (old default)": {"deltas": True, "norm": "cmn", "trim_db": None},
    "mfcc raw": {"norm": "none", "trim_db": None},
    "mfcc gain": {"trim_db": None},
    "mfcc cmn trim40": {"norm": "cmn"},
    "mfcc cmvn trim40": {"norm": "cmvn"},
    "mfcc raw trim40": {"norm": "none"},
    "default: mfcc gain trim40": {},
    "mfcc gain trim30": {"trim_db": 30.0},
    "mfcc gain trim60": {"trim_db": 60.0},
    "mfcc+d gain trim40": {"deltas": True},
    "mfcc40 gain trim40": {"n_mfcc": 40},
    "logmel gain trim40": {"feature": "logmel"},
    "pcen trim40": {"feature": "pcen"},
}
#: Pooling modes tried per front-end (the default front-end gets every mode).
POOLINGS: dict[str, tuple[str, ...]] = {
    "logmel raw": ("mean", "meanstd", "pyramid"),
    "logmel cmn": ("meanstd", "pyramid"),
    "mfcc+d cmn (old default)": ("mean", "meanstd", "pyramid"),
    "mfcc raw": ("mean", "meanstd", "pyramid"),
    "default: mfcc gain trim40": ("mean", "max", "meanmax", "meanstd", "pyramid"),
    "mfcc+d gain trim40": ("meanstd", "pyramid"),
    "logmel gain trim40": ("meanstd", "pyramid"),
    "pcen trim40": ("meanstd", "pyramid"),
}
POSTS: tuple[tuple[str, float], ...] = (("none", DEFAULT_SHRINKAGE), ("center", DEFAULT_SHRINKAGE),
                                        ("whiten", DEFAULT_SHRINKAGE))
#: Extra whitening strengths tried on the default front-end and pooling.
SHRINKAGES = (0.1, 0.3, 3.0)


@dataclass
class Frames:
    """Cached window frames of every file for one front-end setting."""

    per_file: list[list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=list)
    seconds: float = 0.0
    dim: int = 0


def embed_frames(enc: LogMelEncoder, audio: list[np.ndarray]) -> Frames:
    """Frames of each file's windows (the encoder's default window and hop), timed."""
    win = to_samples(enc.default_window_s, SR)
    hop = to_samples(enc.default_hop_s, SR)
    out = Frames(dim=enc.dim)
    start = time.perf_counter()
    for x in audio:
        spans = plan_windows(x.size, win, hop)
        rows = []
        for a, b in spans:
            fe = enc.frame_embeddings(x[None, a:b], np.array([b - a]))
            rows.append((fe.embeddings, fe.mask))
        out.per_file.append(rows)
    out.seconds = time.perf_counter() - start
    return out


def file_vectors(frames: Frames, mode: str) -> np.ndarray:
    """``(n_files, P)`` float32 file vectors: pool_windows per window, then pool_file."""
    vecs = []
    for rows in frames.per_file:
        pooled = [pool_windows(e, m, mode) for e, m in rows]
        v = np.concatenate([p[0] for p in pooled])
        c = np.concatenate([p[1] for p in pooled])
        vecs.append(pool_file(v, c, mode))
    return np.stack(vecs)


def realtime(audio: list[np.ndarray], repeats: int = 2) -> tuple[float, float]:
    """Default baseline speed: audio seconds per wall second for frame_embeddings + pooling.

    Returns ``(best, median)`` over ``repeats`` passes over every file.
    """
    enc = LogMelEncoder()
    total_s = sum(x.size for x in audio) / SR
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        embed_and_pool = embed_frames(enc, audio)
        file_vectors(embed_and_pool, enc.default_pooling)
        times.append(time.perf_counter() - start)
    return total_s / min(times), total_s / float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fsdd")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_baseline.md")
    args = ap.parse_args()

    meta = pd.read_csv(args.data / "labels.csv")
    t0 = time.perf_counter()
    audio = [load(args.data / "recordings" / f, SR) for f in meta["file"]]
    decode_s = time.perf_counter() - t0
    labels = meta["digit"].astype(str).tolist()
    files = meta["file"].tolist()
    groups = meta["speaker"].tolist()
    audio_s = sum(x.size for x in audio) / SR
    print(f"decoded {len(audio)} files ({audio_s:.0f} s of audio) in {decode_s:.1f} s", flush=True)

    rows = []
    default_vectors = None
    for name, overrides in FRONTENDS.items():
        enc = LogMelEncoder(EncoderOptions(extra=overrides))
        frames = embed_frames(enc, audio)
        for mode in POOLINGS.get(name, ("pyramid",)):
            raw = file_vectors(frames, mode)
            if name.startswith("default") and mode == LogMelEncoder.default_pooling:
                default_vectors = raw
            posts = list(POSTS)
            if name.startswith("default") and mode == LogMelEncoder.default_pooling:
                posts += [("whiten", s) for s in SHRINKAGES]
            for post, shrink in posts:
                start = time.perf_counter()
                vec = Postprocess.fit(post, raw, shrinkage=shrink).apply(raw)
                r = evaluate(vec, labels, files, groups, ks=(1, 5, 10), full_map=False)
                post_name = post if post != "whiten" or shrink == DEFAULT_SHRINKAGE else f"whiten s={shrink:g}"
                rows.append({
                    "front-end": name, "pooling": mode, "post": post_name, "dims": vec.shape[1],
                    "knn_accuracy@1": r.metrics["knn_accuracy@1"], "knn_accuracy@5": r.metrics["knn_accuracy@5"],
                    "map@10": r.metrics["map@10"], "frames_s": frames.seconds,
                    "pool+eval_s": time.perf_counter() - start,
                })
                print(" | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in rows[-1].values()), flush=True)
        del frames

    table = pd.DataFrame(rows)
    best, median = realtime(audio)
    print(f"default baseline speed: {best:.0f}x realtime (best of 2), {median:.0f}x (median)", flush=True)
    probe = linear_probe(default_vectors, labels, groups) if default_vectors is not None else None
    if probe is not None:
        print(f"linear probe on default vectors: {probe.accuracy_mean:.3f} +- {probe.accuracy_std:.3f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(table, len(audio), audio_s, decode_s, best, median, probe), encoding="utf-8")
    print(f"wrote {args.out}")


def render(table: pd.DataFrame, n_files: int, audio_s: float, decode_s: float, rt_best: float, rt_median: float, probe: Any) -> str:
    """The markdown document: protocol, machine, results, the chosen default and why."""
    cfg = LogMelConfig()
    d = table[(table["front-end"].str.startswith("default")) & (table["pooling"] == "pyramid")]
    get = lambda post: float(d.loc[d["post"] == post, "knn_accuracy@1"].iloc[0])  # noqa: E731
    naive = table[(table["front-end"] == "logmel raw") & (table["pooling"] == "mean") & (table["post"] == "none")]
    old = table[(table["front-end"].str.contains("old default")) & (table["pooling"] == "meanstd")
                & (table["post"] == "none")]
    best = table.sort_values("knn_accuracy@1", ascending=False).iloc[0]
    shown = table.copy()
    shown["frames_s"] = shown["frames_s"].map(lambda v: f"{v:.1f}")
    shown["pool+eval_s"] = shown["pool+eval_s"].map(lambda v: f"{v:.1f}")
    probe_line = (f"A linear probe (logistic regression, GroupKFold over the 6 speakers) on the default raw "
                  f"vectors reaches {probe.accuracy_mean:.3f} ± {probe.accuracy_std:.3f}."
                  if probe is not None else "")

    def acc(front: str, pooling: str = "pyramid", post: str = "none") -> float:
        sel = table[(table["front-end"] == front) & (table["pooling"] == pooling) & (table["post"] == post)]
        return float(sel["knn_accuracy@1"].iloc[0])

    flat = table[table["pooling"] != "pyramid"]
    flat_none = float(flat.loc[flat["post"] == "none", "knn_accuracy@1"].max())
    flat_any = float(flat["knn_accuracy@1"].max())
    dflt = "default: mfcc gain trim40"
    return f"""# The spectral baseline on FSDD

Generated by `python scripts/bench_baseline.py`; every number below is from that run.

## Protocol

- Data: FSDD, 3,000 recordings of spoken digits (6 speakers x 10 digits x 50 takes), 8 kHz WAV,
  {audio_s:.0f} s of audio in all, decoded once with `retrieval.audio.load(path, 16000)` ({decode_s:.1f} s).
- Vectors: one per file, made the way ingest makes them: the encoder's frames for each 4 s window
  (hop 2 s; every FSDD clip fits in one window), `pool_windows`, then `pool_file`.
- Post-processing fitted on all 3,000 file vectors, then L2 normalisation (`retrieval.postprocess`).
- Evaluation: `retrieval.evaluate.evaluate(vectors, digit, file, groups=speaker)`: leave-one-out,
  cosine similarity, similarity-weighted kNN vote, neighbours from the query's own speaker
  excluded, so every answer comes from another speaker. Headline: `knn_accuracy@1`. Chance is 0.10.
- Machine: {platform.machine()} CPU, {os.cpu_count()} cores shared with other work while it ran
  (timings are wall-clock and noisy), Python {platform.python_version()}, numpy {np.__version__}.

## The default and why

`LogMelEncoder()` now gives {cfg.n_mfcc} MFCCs (from {cfg.n_mels} log-mel bands, 25 ms frames every
10 ms at 16 kHz) without deltas, `norm="{cfg.norm}"`, `trim_db={cfg.trim_db:g}`, and pools with
`pyramid` (its `default_pooling`). FSDD `knn_accuracy@1` of the default:

| post-processing | knn_accuracy@1 |
| --- | --- |
| none (the index default today) | {get('none'):.3f} |
| center | {get('center'):.3f} |
| whiten (shrinkage {DEFAULT_SHRINKAGE:g}) | {get('whiten'):.3f} |

For comparison: naive mean-pooled log-mel {float(naive['knn_accuracy@1'].iloc[0]):.3f} ({acc('logmel raw', 'mean', 'center'):.3f}
centred); the previous
default (MFCC + deltas, per-window CMN, `meanstd`) {float(old['knn_accuracy@1'].iloc[0]):.3f}. The best
variant tried, {best['front-end']} / {best['pooling']} / {best['post']}, reaches {best['knn_accuracy@1']:.3f}.
{probe_line}

Each choice, and how general it is:

- **Gain normalisation, not CMN** (general). Removing the window's mean level makes the vector
  independent of recording level (tested: a clip at a quarter of the amplitude gives the same
  vector), while keeping the spectral envelope. Per-coefficient CMN also removes the envelope,
  which is what tells rain from an engine or one instrument from another; it is a speech habit.
  On FSDD, with nothing fitted on the corpus, CMVN scores {acc('mfcc cmvn trim40'):.3f} and CMN
  {acc('mfcc cmn trim40'):.3f} against {get('none'):.3f} for gain normalisation (`none`), but both lose once the corpus is centred or whitened (CMVN {acc('mfcc cmvn trim40', post='whiten'):.3f}, CMN
  {acc('mfcc cmn trim40', post='whiten'):.3f} against {get('whiten'):.3f} whitened). We keep gain normalisation:
  the envelope it keeps matters more for sounds that are not speech.
- **Trimming leading and trailing frames more than 40 dB below the window's loudest frame**
  (general). Implemented as the encoder marking those frames invalid in its mask, so every pooling
  mode, and window search, sees the sound and not the silence around it. Frames inside the sound
  are never dropped, and digital silence keeps every frame. Trimming adds about two points
  ({acc('mfcc gain'):.3f} -> {get('none'):.3f} with `none`, {acc('mfcc gain', post='whiten'):.3f} -> {get('whiten'):.3f} whitened).
  40 dB is a conservative range: 30 dB scored a little higher on FSDD ({acc('mfcc gain trim30', post='whiten'):.3f}
  whitened), 60 dB lower ({acc('mfcc gain trim60', post='whiten'):.3f}); picking 30 would be tuning to spoken digits.
- **`pyramid` pooling** (general; a pooling mode any encoder can use): the `[mean, std]` of the
  window, which is the classic environmental-sound descriptor, followed by the means of its two
  halves and four quarters, so the vector also says how the sound evolves (onset, body, decay).
  Parts are cut by rank among the valid frames, so with trimming they align to the sound. The
  file vector is exact for the `[mean, std]` block (all the file's frames) and the
  frame-count-weighted average window shape for the parts. It is the largest single gain:
  with the same front-end, `meanstd` gives {acc(dflt, 'meanstd'):.3f} (`none`) and {acc(dflt, 'meanstd', 'whiten'):.3f}
  (whitened); no variant without the pyramid passes {flat_none:.3f} without post-processing or {flat_any:.3f} with
  it. A digit is a sequence of sounds, and so are most events.
- **No deltas** (general): the pyramid already carries the temporal change that deltas
  summarise; they add about a point ({acc('mfcc+d gain trim40'):.3f} `none`, {acc('mfcc+d gain trim40', post='whiten'):.3f}
  whitened) at three times the size (480 dims instead of 160). Users who pool with `mean` or
  `meanstd` can turn them on with `--opt deltas=true`.
- **20 MFCCs** (general, the standard size): 40 coefficients ({acc('mfcc40 gain trim40', post='whiten'):.3f} whitened)
  or 64 log-mel bands ({acc('logmel gain trim40', post='whiten'):.3f}) do not help here. Log-mel keeps finer spectral
  detail (pitch), which may matter for music and calls: it stays one `--opt feature=logmel` away.
- **PCEN** is kept as an option but loses clearly on this corpus ({acc('pcen trim40'):.3f} `none`,
  {acc('pcen trim40', post='whiten'):.3f} whitened).
- **Post-processing**: whitening fitted on the corpus (shrinkage {DEFAULT_SHRINKAGE:g}, now the default
  strength) adds about ten points over `none`. It is label-free and general, and we recommend it for
  the spectral baseline; whether it becomes the index-wide default is the index owner's call,
  since it is fitted per corpus. Shrinkage 0.3 to 3 are within two points of each other.

## Speed

Default baseline, `frame_embeddings` + pooling over all {n_files:,} files, one window at a time on
one core: **{rt_best:.0f}x realtime** (best of two passes; {rt_median:.0f}x median). The mel filterbank
is applied as a sparse matrix: a dense `(T, 257) @ (257, 64)` product through multi-threaded
BLAS was measured 40x slower on this shared machine, where BLAS threads spin waiting for cores.

## Every variant tried

`frames_s`: computing the frames of all files for that front-end (shared by its rows);
`pool+eval_s`: pooling, post-processing and the evaluation of that row.

{markdown_table(shown)}
"""


if __name__ == "__main__":
    main()
