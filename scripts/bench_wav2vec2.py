"""Benchmark the wav2vec2 encoder against plain transformers, in one run on one machine.

Three ways to turn a corpus of clips into one mean-pooled vector per clip, with the
full-size ``facebook/wav2vec2-base`` architecture (``Wav2Vec2Config()``) and random
weights (speed does not depend on the weights; no model hub is needed):

    (a) naive      per clip: transformers' feature extractor, then the model, then the mean
    (b) ceiling    the model's own batched forward on pre-computed features, batches of
                   equal-length clips (no padding, no per-clip work): the upper bound
    (c) encoder    ``Wav2Vec2Encoder.frame_embeddings`` in batches, then ``pool_windows(.., "mean")``
    (c') encoder   the same on (b)'s equal-length clips: the encoder's own overhead over the
                   ceiling, and what ingest sees for files longer than a window

``--masked`` adds (d): (c) for a checkpoint trained with attention masks
(``feat_extract_norm="layer"``, ``return_attention_mask=True``, like wav2vec2-large-lv60),
where the encoder may pad rows of similar length into one forward pass.

Throughput is audio seconds per wall second. Results go to stdout and to
``docs/bench_wav2vec2.md`` (a fragment for ``docs/benchmarks.md``).

``layer_sweep`` is a helper for later: per-layer leave-one-out kNN accuracy of mean-pooled
vectors on a labelled set, to show which middle layer serves a non-speech task best.

Usage: ``python scripts/bench_wav2vec2.py [--clips 16 --min-s 1 --max-s 4 --batch 4 --masked --sweep]``
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from _bench import pad

from retrieval.encoders.base import EncoderOptions
from retrieval.encoders.wav2vec2 import Wav2Vec2Encoder
from retrieval.pooling import pool_windows

SR = 16000
DOC = Path(__file__).resolve().parents[1] / "docs" / "bench_wav2vec2.md"


def make_corpus(n: int, min_s: float, max_s: float, seed: int = 0) -> list[np.ndarray]:
    """``n`` seeded float32 clips at 16 kHz, uniform lengths in ``[min_s, max_s]``: noise, tones, chirps."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        samples = int(round(rng.uniform(min_s, max_s) * SR))
        t = np.arange(samples) / SR
        f0 = rng.uniform(100, 2000)
        kind = i % 3
        x = (0.3 * rng.standard_normal(samples) if kind == 0 else
             0.5 * np.sin(2 * np.pi * f0 * t) if kind == 1 else
             0.4 * np.sin(2 * np.pi * (f0 + 500 * t) * t))
        out.append(x.astype(np.float32))
    return out


def save_checkpoint(folder: Path, masked: bool, seed: int = 0) -> Path:
    """Random full-size wav2vec2-base (or its layer-norm, attention-mask variant) plus feature extractor."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(seed)
    norm = dict(feat_extract_norm="layer", do_stable_layer_norm=True) if masked else {}
    Wav2Vec2Model(Wav2Vec2Config(**norm)).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=masked).save_pretrained(folder)
    return folder


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, float, np.ndarray]:
    """``(wall seconds, CPU seconds of this process, fn())``."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - start, time.process_time() - cpu, out


class Naive:
    """(a) one clip at a time through transformers, as its docs show: extractor, model, mean."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoFeatureExtractor, AutoModel

        self.fe, self.model = AutoFeatureExtractor.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()

    def __call__(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """``(n, D)`` float32 clip vectors."""
        out = []
        with torch.inference_mode():
            for x in clips:
                inputs = self.fe(x, sampling_rate=SR, return_tensors="pt")
                out.append(self.model(**inputs).last_hidden_state[0].mean(0).numpy())
        return np.stack(out)


def equal_pieces(clips: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The clips' audio cut into ``len(clips)`` pieces of equal length (the ceiling's clips)."""
    audio = np.concatenate(clips)
    size = len(audio) // len(clips)
    return [audio[i * size : (i + 1) * size] for i in range(len(clips))]


def features(fe: Callable, pieces: Sequence[np.ndarray]) -> torch.Tensor:
    """(b) input: equal-length pieces through the feature extractor: ``(n, S)`` float32."""
    return torch.from_numpy(np.stack(fe(list(pieces), sampling_rate=SR)["input_values"]))


def run_ceiling(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """(b) ``(n, D)`` float32: the model's forward on a ready batch of equal-length clips, nothing else."""
    with torch.inference_mode():
        return model(x).last_hidden_state.mean(1).numpy()


def run_encoder(encoder: Wav2Vec2Encoder, clips: Sequence[np.ndarray]) -> np.ndarray:
    """(c) ``(n, D)`` float32: one ``frame_embeddings`` call on the padded clips, then mask-aware mean pooling."""
    frames = encoder.frame_embeddings(*pad(clips))
    return pool_windows(frames.embeddings, frames.mask, "mean")[0]


def layer_sweep(encoder: Wav2Vec2Encoder, clips: Sequence[np.ndarray], labels: Sequence[object],
                batch: int = 8, k: int = 1) -> list[tuple[int, float]]:
    """Leave-one-out kNN accuracy of mean-pooled vectors from every hidden layer.

    Args:
        encoder: built with layer ``"last"`` or ``"mean"`` (all layers kept).
        clips: float32 mono clips at ``encoder.sample_rate``.
        labels: one label per clip.
        k: neighbours voting (cosine similarity; ties go to the nearest neighbour's label).

    Returns:
        ``[(layer, accuracy), ...]`` for layers ``0..num_layers``, layer as ``--layer`` counts.
    """
    labels_arr = np.asarray(labels)
    pooled: list[list[np.ndarray]] = [[] for _ in range(encoder.n_layers + 1)]
    for i in range(0, len(clips), batch):
        for layer, frames in enumerate(encoder.layer_frames(*pad(clips[i : i + batch]))):
            pooled[layer].append(pool_windows(frames.embeddings, frames.mask, "mean")[0])
    results = []
    for layer, parts in enumerate(pooled):
        v = np.concatenate(parts).astype(np.float64)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        sim = v @ v.T
        np.fill_diagonal(sim, -np.inf)
        nearest = np.argsort(-sim, axis=1)[:, :k]
        hits = 0
        for row, nbrs in enumerate(nearest):
            votes, counts = np.unique(labels_arr[nbrs], return_counts=True)
            best = votes[counts == counts.max()]
            guess = best[0] if len(best) == 1 else labels_arr[nbrs[0]]
            hits += int(guess == labels_arr[row])
        results.append((layer, hits / len(labels_arr)))
    return results


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=16, help="clips in the corpus")
    parser.add_argument("--min-s", type=float, default=1.0, help="shortest clip, seconds")
    parser.add_argument("--max-s", type=float, default=4.0, help="longest clip, seconds")
    parser.add_argument("--batch", type=int, default=4, help="clips per encoder call / ceiling batch")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--masked", action="store_true", help="also time a layer-norm, attention-mask checkpoint")
    parser.add_argument("--sweep", action="store_true", help="also run layer_sweep on the corpus (smoke test)")
    parser.add_argument("--no-doc", action="store_true", help=f"do not write {DOC.name}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    load_before = os.getloadavg()[0]
    # sorted by length, as retrieval.embed batches windows, so a batch holds similar lengths
    corpus = sorted(make_corpus(args.clips, args.min_s, args.max_s), key=len)
    audio_s = sum(len(c) for c in corpus) / SR
    chunks = [corpus[i : i + args.batch] for i in range(0, len(corpus), args.batch)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_checkpoint(Path(tmp) / "w2v-base", masked=False)
        naive = Naive(folder)
        pieces = [equal_pieces(c) for c in chunks]
        ceiling_inputs = [features(naive.fe, p) for p in pieces]
        encoder = Wav2Vec2Encoder(EncoderOptions(model=str(folder)))
        methods: dict[str, Callable[[int], np.ndarray]] = {
            "(a) naive transformers loop, per clip": lambda i: naive(chunks[i]),
            f"(b) model forward, equal-length batches of {args.batch} (ceiling)":
                lambda i: run_ceiling(naive.model, ceiling_inputs[i]),
            f"(c) Wav2Vec2Encoder + mean pooling, batches of {args.batch}": lambda i: run_encoder(encoder, chunks[i]),
            "(c') as (c), on the ceiling's equal-length clips": lambda i: run_encoder(encoder, pieces[i]),
        }
        if args.masked:
            enc_m = Wav2Vec2Encoder(EncoderOptions(model=str(save_checkpoint(Path(tmp) / "w2v-masked", masked=True))))
            methods["(d) as (c), layer-norm checkpoint with attention masks"] = lambda i: run_encoder(enc_m, chunks[i])
        run_encoder(encoder, corpus[:1])  # warm-up: thread pools, allocator
        seconds = dict.fromkeys(methods, 0.0)
        cpu_seconds = dict.fromkeys(methods, 0.0)
        vectors: dict[str, list[np.ndarray]] = {m: [] for m in methods}
        names = list(methods)
        for i in range(len(chunks)):  # interleaved, rotating order: load from other jobs hits every method alike
            for m in names[i % len(names):] + names[: i % len(names)]:
                t, c, v = timed(lambda: methods[m](i))
                seconds[m] += t
                cpu_seconds[m] += c
                vectors[m].append(v)
        v_a, v_c = (np.concatenate(vectors[names[k]]) for k in (0, 2))
        notes = [f"(a) vs (c) clip vectors: min cosine {cosine(v_a, v_c).min():.6f}, "
                 f"max |difference| {np.abs(v_a - v_c).max():.1e}",
                 "methods run interleaved chunk by chunk, in rotating order, so load from other jobs "
                 "on a shared machine falls on all of them alike; 1-minute load average "
                 f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores; "
                 "(c') does the same work as (b), so its distance from 1.00x is the run's noise",
                 "how (c) batches clips of different lengths without padding reaching the model's group-norm "
                 "conv front-end: the conv stack runs on each clip alone, frames are padded, and the "
                 "transformer masks them (see retrieval/encoders/wav2vec2.py)"]
        if args.sweep:
            sweep = layer_sweep(encoder, corpus, [i % 3 for i in range(len(corpus))], batch=args.batch)
            notes.append("layer sweep (random weights, synthetic labels; smoke test only): "
                         + ", ".join(f"{layer}: {acc:.2f}" for layer, acc in sweep))
    ceiling_audio_s = sum(x.numel() for x in ceiling_inputs) / SR
    rows = [(m, seconds[m], cpu_seconds[m], ceiling_audio_s if m.startswith(("(b)", "(c')")) else audio_s)
            for m in names]
    report = render(rows, notes, args, audio_s)
    print(report)
    if not args.no_doc:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(report)
        print(f"wrote {DOC}")


def render(rows: list[tuple[str, float, float, float]], notes: list[str], args: argparse.Namespace,
           audio_s: float) -> str:
    """Markdown fragment: setup, one row per method (wall and CPU throughput), ratios to (a) and (b).

    Args:
        rows: ``(label, wall s, CPU s, audio s)`` per method, (a) first and (b) second.
    """
    wall = {label: a / t for label, t, _, a in rows}
    cpu = {label: a / c for label, _, c, a in rows}
    lines = [
        "## wav2vec2 encoder throughput",
        "",
        f"`python scripts/bench_wav2vec2.py --clips {args.clips} --min-s {args.min_s:g} --max-s {args.max_s:g} "
        f"--batch {args.batch}{' --masked' if args.masked else ''}`, {time.strftime('%Y-%m-%d')}; "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, CPU. "
        f"Full-size wav2vec2-base architecture (95M parameters, random weights); {args.clips} synthetic clips "
        f"of {args.min_s:g}-{args.max_s:g} s ({audio_s:.1f} s of audio), one mean-pooled vector per clip. "
        f"Throughput in audio seconds per wall second, and per CPU second of this process (steadier "
        f"when other jobs share the cores); ratios as wall / CPU. Clips are sorted by length before "
        f"batching, as `retrieval.embed` does.",
        "",
        "| method | wall s | audio s / wall s | audio s / CPU s | vs (a) naive | vs (b) ceiling |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    a, b = rows[0][0], rows[1][0]
    for label, t, _, _ in rows:
        lines.append(f"| {label} | {t:.1f} | {wall[label]:.2f} | {cpu[label]:.2f} "
                     f"| {wall[label] / wall[a]:.2f}x / {cpu[label] / cpu[a]:.2f}x "
                     f"| {wall[label] / wall[b]:.2f}x / {cpu[label] / cpu[b]:.2f}x |")
    lines += ["", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
