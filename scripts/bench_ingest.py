"""Benchmark the ingest pipeline: throughput per encoder, memory, and precision, in one run.

Throughput is audio seconds per wall second, for four ways of turning files into vectors,
run in the same process, best of ``--repeats`` runs each, in rotating order (so load from
other jobs on a shared machine falls on all of them alike):

    (a) naive      per file: soundfile decode + soxr resample + the model's own feature
                   extractor (transformers', or the plain encoder) + forward, one file at a time
    (b) ceiling    the model's forward alone on pre-computed inputs, batched and ordered as the
                   encoder batches them (nothing else timed): the upper bound for any pipeline
    (c) ingest w0  ``retrieval.ingest.ingest`` end to end (decode, windows, embed, pool, DuckDB,
                   FAISS), decoding in the main process (log-mel and wav2vec2 only)
    (d) ingest wN  the same with ``workers=N`` decoding processes

Model encoders run at 1 torch thread and at every core (the faster ceiling counts): on a
2-core machine shared with other jobs the answer changes with their load.

``ingest`` is timed with the encoder already loaded (``resolve`` is cached: loading a
checkpoint is a one-off cost, reported separately) and with the worker fork server already
booted (its one-off start is the "cold CLI" row, which runs ``retrieve index`` in a fresh
process). CPU seconds count every process (main, fork server, workers).

Model encoders use full-size configurations with random weights (speed does not depend on
the weights; no model hub here): ``Wav2Vec2Config()`` (wav2vec2-base), BEATs FULL rebuilt
from ``shared/golden/beats/weights_manifest_full.json``, ``ClapConfig()`` (HTSAT-tiny +
RoBERTa-base), on a small FSDD subset. The log-mel baseline runs on all of FSDD.

``--sections read`` sets a cold ``retrieve index`` of all of FSDD ((g) defaults, (h)
``--workers 0``) against (f) a bare one-core loop that decodes, resamples and takes a power
STFT of the same files with warm imports, and two floors: (i) a fresh interpreter importing
the libraries an ingest needs, and (j) the decode and features this index's recipe computes,
one core, warm, nothing written; (i) + (f) and (i) + (j) are the least a cold one-process run
could take. ``--sections workers`` sets the automatic worker count against ``--workers 0``
and ``1``, cold, on FSDD and on an hour of 44.1 kHz stereo in 30 s files made from FSDD words.

``--memory`` measures peak RSS (each case in a fresh process) of indexing FSDD and a
synthetic 1-hour file; ``--precision`` measures each ``--precision``'s cosine to fp32 and
its effect on nearest neighbours (wav2vec2, BEATs, CLAP), plus what fp16 would do on the CPU
(refused there by the encoders; forced through ``torch.autocast`` for one BEATs row).

Usage: ``python scripts/bench_ingest.py [--sections throughput,read,workers,memory,precision] [--workers 2]``
Writes ``docs/bench_ingest.md`` (``--no-doc`` to skip): each section it ran replaces that
section of the generated block, with its own command line and machine; the others are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _bench import CachedResolve, write_full_clap

# Heavy imports (torch, transformers, the encoders) stay inside functions: decoding workers
# re-import this script as their __main__, and should not load torch for nothing.

ROOT = Path(__file__).resolve().parents[1]
# the checkout's sibling shared/ folder (a worktree one level deeper finds it a level up)
SHARED = next((p / "shared" for p in ROOT.parents if (p / "shared" / "data").is_dir()), ROOT.parent / "shared")
FSDD = SHARED / "data" / "fsdd" / "recordings"
BEATS_MANIFEST = SHARED / "golden" / "beats" / "weights_manifest_full.json"
DOC = ROOT / "docs" / "bench_ingest.md"


# -- measuring ----------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds (user + system) of this process and all its descendants, sampled every 0.1 s.

    Descendants that exit between samples lose at most 0.1 s each.
    """

    def __init__(self) -> None:
        import psutil

        self._me = psutil.Process()
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        import psutil

        procs = [self._me]
        try:
            procs += self._me.children(recursive=True)
        except psutil.Error:
            pass
        for p in procs:
            try:
                t = p.cpu_times()
                self._seen[p.pid] = t.user + t.system
            except psutil.Error:
                pass

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            self._sample()

    def __enter__(self) -> CpuMeter:
        self._sample()
        self._start = dict(self._seen)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.seconds = sum(v - self._start.get(pid, 0.0) for pid, v in self._seen.items())
        self.main_seconds = self._seen[self._me.pid] - self._start[self._me.pid]


@dataclass
class Result:
    """One timed method: best wall time over repeats, and its CPU seconds."""

    encoder: str
    method: str
    audio_s: float = 0.0
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    main_cpus: list[float] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return min(self.walls)

    @property
    def cpu_s(self) -> float:
        return self.cpus[int(np.argmin(self.walls))]

    @property
    def main_cpu_s(self) -> float:
        return self.main_cpus[int(np.argmin(self.walls))]

    @property
    def speed(self) -> float:
        return self.audio_s / self.wall_s


def run_interleaved(encoder: str, methods: dict[str, Callable[[], float]], repeats: int) -> list[Result]:
    """Run each method ``repeats`` times, rotating the order every round. Each returns audio seconds."""
    results = {name: Result(encoder, name) for name in methods}
    names = list(methods)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            with CpuMeter() as cpu:
                start = time.perf_counter()
                audio_s = methods[name]()
                wall = time.perf_counter() - start
            res = results[name]
            res.audio_s, res.walls, res.cpus = audio_s, res.walls + [wall], res.cpus + [cpu.seconds]
            res.main_cpus.append(cpu.main_seconds)
            print(f"  {encoder:8s} {name:38s} {wall:7.2f} s wall {cpu.seconds:7.2f} s CPU "
                  f"({cpu.main_seconds:.2f} main) "
                  f"{audio_s / wall:8.1f} x realtime", flush=True)
    return list(results.values())


# -- corpora ------------------------------------------------------------------------------


def fsdd_files(n: int | None = None) -> list[Path]:
    """All FSDD recordings, or ``n`` of them spread evenly over digits, speakers and takes."""
    files = sorted(FSDD.glob("*.wav"))
    if n is None or n >= len(files):
        return files
    step = len(files) / n
    return [files[int(i * step)] for i in range(n)]


def link_corpus(files: list[Path], folder: Path) -> Path:
    """A corpus folder of symlinks to ``files`` (ingest follows them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        (folder / f.name).symlink_to(f)
    return folder


def duration_s(files: list[Path]) -> float:
    import soundfile as sf

    return sum(sf.info(str(f)).duration for f in files)


def read_resampled(path: Path, sample_rate: int) -> np.ndarray:
    """What a user would write: decode the whole file, average channels, resample in one call."""
    import soundfile as sf
    import soxr

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    return x if sr == sample_rate else soxr.resample(x, sr, sample_rate).astype(np.float32)


def decoded_windows(files: list[Path], recipe: Any) -> list[np.ndarray]:
    """Every window ingest would embed, decoded the way ingest decodes (for the ceilings)."""
    from retrieval.pipeline import WindowSpec, decode_file

    spec = WindowSpec(recipe.sample_rate, recipe.window_samples, recipe.hop_samples, recipe.silence_db)
    return [w for f in files for w in decode_file(f, spec).windows()]


def embed_order(windows: list[np.ndarray], batch_size: int = 16, longest_first: bool = False) -> list[np.ndarray]:
    """``windows`` in the order the encoder sees them: sorted by length (as ``embed_windows`` does),
    in batches of ``batch_size``, each batch longest first when the encoder runs it so.

    The ceilings use this order too: on CPU a run of shrinking inputs reuses freed memory,
    and is measurably (about 30 % for wav2vec2) faster than the same inputs in corpus order.
    """
    ordered = sorted(windows, key=len)
    if not longest_first:
        return ordered
    return [w for i in range(0, len(ordered), batch_size) for w in ordered[i:i + batch_size][::-1]]


# -- ingest -------------------------------------------------------------------------------


def ingest_method(corpus: Path, work: Path, choices: Any, workers: int, batch_size: int = 16) -> Callable[[], float]:
    """A method that ingests ``corpus`` into a fresh index and returns its audio seconds."""
    import retrieval.ingest as ing

    def run() -> float:
        ix = Path(tempfile.mkdtemp(dir=work, prefix="ix-"))
        try:
            s = ing.ingest(corpus, ix, choices, ing.IngestOptions(workers=workers, batch_size=batch_size))
        finally:
            shutil.rmtree(ix, ignore_errors=True)
        if s.files_failed:
            raise RuntimeError(f"{s.files_failed} files failed in the benchmark corpus")
        return s.audio_seconds

    return run


def boot_workers(workers: int) -> None:
    """Start (and stop) one pool, so the fork server is running before anything is timed."""
    from retrieval.pipeline import DecodePool

    with DecodePool(workers) as pool:
        pool.warm()


# -- encoders -----------------------------------------------------------------------------


def bench_logmel(work: Path, files: list[Path], workers: int, repeats: int) -> list[Result]:
    from retrieval.configure import Choices, resolve
    from retrieval.embed import embed_windows
    from retrieval.pooling import pool_windows

    choices = Choices()
    encoder, recipe = resolve(choices, None)
    corpus = link_corpus(files, work / "logmel-corpus")
    audio_s = duration_s(files)
    windows = decoded_windows(files, recipe)

    def naive() -> float:
        from retrieval.audio.windows import plan_windows

        for f in files:
            x = read_resampled(f, recipe.sample_rate)
            for a, b in plan_windows(len(x), recipe.window_samples, recipe.hop_samples):
                frames = encoder.frame_embeddings(x[None, a:b], np.array([b - a]))
                pool_windows(frames.embeddings, frames.mask, recipe.pooling)
        return audio_s

    def ceiling() -> float:
        embed_windows(encoder, windows, recipe.pooling, 16)
        return audio_s

    methods = {
        "(a) naive per-file loop": naive,
        "(b) ceiling: batched encoder": ceiling,
        "(c) ingest, workers=0": ingest_method(corpus, work, choices, 0),
        f"(d) ingest, workers={workers}": ingest_method(corpus, work, choices, workers),
    }
    return run_interleaved("logmel", methods, repeats)


def cold_cli(work: Path, files: list[Path], workers: int) -> Result:
    """``retrieve index`` in a fresh process: imports, fork server boot and all."""
    corpus = work / "logmel-corpus"
    if not corpus.exists():
        link_corpus(files, corpus)
    res = Result("logmel", f"(e) cold `retrieve index --workers {workers}`", duration_s(files))
    ix = work / "cold-ix"
    with CpuMeter() as cpu:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "retrieval", "index", str(corpus), "--index", str(ix),
                        "--workers", str(workers), "--no-progress"], check=True, capture_output=True)
        wall = time.perf_counter() - start
    res.walls, res.cpus, res.main_cpus = [wall], [cpu.seconds], [cpu.main_seconds]
    print(f"  logmel   {res.method:34s} {wall:7.2f} s wall {cpu.seconds:7.2f} s CPU {res.speed:8.1f} x realtime")
    shutil.rmtree(ix, ignore_errors=True)
    return res


# -- against reading the audio -------------------------------------------------------------


def bare_read_loop(files: list[Path], sample_rate: int = 16000, win: int = 400, hop: int = 160,
                   n_fft: int = 512) -> float:
    """The floor for any ingest: decode, resample and take a power STFT of every file, one core.

    What the log-mel front end must do at the least (25 ms Hann frames every 10 ms at 16 kHz,
    as :class:`~retrieval.encoders.logmel.LogMelEncoder`), with nothing written anywhere.
    Imports are warm: only the loop is timed. Returns audio seconds.
    """
    import soundfile as sf
    import soxr
    from threadpoolctl import threadpool_limits

    window = np.hanning(win)
    audio_s = 0.0
    with threadpool_limits(1):
        for f in files:
            x, sr = sf.read(str(f), dtype="float32", always_2d=True)
            x = x.mean(axis=1)
            audio_s += len(x) / sr
            y = x if sr == sample_rate else soxr.resample(x, sr, sample_rate)
            if len(y) < win:
                y = np.pad(y, (0, win - len(y)))
            frames = np.lib.stride_tricks.sliding_window_view(y, win)[::hop]
            np.abs(np.fft.rfft(frames * window, n=n_fft, axis=1)) ** 2
    return audio_s


def cli_index(corpus: Path, work: Path, extra: tuple[str, ...] = ()) -> Callable[[], float]:
    """``retrieve index CORPUS`` in a fresh process, default options: imports, pool start-up and all."""

    def run() -> float:
        ix = Path(tempfile.mkdtemp(dir=work, prefix="cli-"))
        shutil.rmtree(ix)
        try:
            out = subprocess.run([sys.executable, "-m", "retrieval", "index", str(corpus), "--index", str(ix),
                                  "--no-progress", "--json", *extra], capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(f"retrieve index failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
        finally:
            shutil.rmtree(ix, ignore_errors=True)
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        if summary["files_failed"]:
            raise RuntimeError(f"{summary['files_failed']} files failed in the benchmark corpus")
        return summary["audio_seconds"]

    return run


#: What any ingest built on these libraries imports before it reads a file (the CLI imports more).
INGEST_LIBRARIES = ("numpy", "soundfile", "soxr", "duckdb", "faiss")


def cold_imports(audio_s: float) -> Callable[[], float]:
    """(i): a fresh interpreter that imports :data:`INGEST_LIBRARIES` and exits; reads no audio.

    Returns ``audio_s`` (FSDD's) so its row's throughput reads as "if the imports were all".
    """
    code = "import " + ", ".join(INGEST_LIBRARIES)

    def run() -> float:
        subprocess.run([sys.executable, "-c", code], check=True)
        return audio_s

    return run


def recipe_loop(files: list[Path]) -> Callable[[], float]:
    """(j): what this index's recipe computes, per group of 16 files, one core, warm, nothing written.

    The same calls an ingest worker makes (:func:`retrieval.pipeline.decode_task` with the
    recipe's encoder: decode, resample, windows, levels, log-mel features, window and file
    pooling), without discovery, hashing, DuckDB, FAISS or process start-up.
    """
    from threadpoolctl import threadpool_limits

    from retrieval.configure import Choices, resolve
    from retrieval.pipeline import WindowSpec, decode_task

    _, recipe = resolve(Choices(), None)
    spec = WindowSpec(recipe.sample_rate, recipe.window_samples, recipe.hop_samples, recipe.silence_db,
                      embed_recipe=recipe)
    paths = [str(f) for f in files]
    decode_task(paths[:16], spec)  # the encoder is built once per process, outside the timing

    def run() -> float:
        audio_s = 0.0
        with threadpool_limits(1):
            for k in range(0, len(paths), 16):
                audio_s += sum(d.report.out_samples for d in decode_task(paths[k:k + 16], spec)) / recipe.sample_rate
        return audio_s

    return run


def bench_read(work: Path, files: list[Path], repeats: int) -> list[Result]:
    """(f) the bare read loop against (g) a cold ``retrieve index`` with default options, with the
    floors (i) and (j), interleaved."""
    corpus = work / "logmel-corpus"
    if not corpus.exists():
        link_corpus(files, corpus)
    return run_interleaved("logmel", {
        "(f) bare decode+resample+STFT, 1 core": lambda: bare_read_loop(files),
        "(g) cold `retrieve index`, defaults": cli_index(corpus, work),
        "(h) cold `retrieve index --workers 0`": cli_index(corpus, work, ("--workers", "0")),
        "(i) cold interpreter importing the libraries": cold_imports(duration_s(files)),
        "(j) decode + this recipe's features, 1 core": recipe_loop(files),
    }, repeats)


def write_stereo_library(folder: Path, files: int = 120, seconds: float = 30.0, rate: int = 44100) -> Path:
    """``files`` stereo 16-bit WAVs of ``seconds`` at ``rate``: FSDD words at levels spread over
    20 dB with gaps between them, the right channel a delayed, quieter copy, and a faint noise
    floor (what a sample library or a field recording looks like to the decoder: long files at
    a rate that must be resampled, two channels to mix)."""
    import soundfile as sf
    import soxr

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words = [soxr.resample(sf.read(str(f), dtype="float32")[0], 8000, rate) for f in fsdd_files(400)]
    n = int(seconds * rate)
    for i in range(files):
        parts, used = [], 0
        while used < n:
            word = words[int(rng.integers(len(words)))] * np.float32(10 ** (rng.uniform(-20, 0) / 20))
            gap = np.zeros(int(rng.integers(rate // 20, rate)), np.float32)
            parts += [word, gap]
            used += len(word) + len(gap)
        mono = np.concatenate(parts)[:n]
        stereo = np.stack([mono, np.roll(mono, 50) * 0.8], axis=1)
        stereo += rng.standard_normal(stereo.shape).astype(np.float32) * 1e-3
        sf.write(str(folder / f"{i:03d}.wav"), stereo, rate, subtype="PCM_16")
    return folder


def bench_workers(work: Path, repeats: int) -> list[Result]:
    """Cold ``retrieve index`` with the automatic worker count against ``--workers 0`` and ``1``,
    interleaved, on FSDD (3,000 short clips) and on an hour of 44.1 kHz stereo in 30 s files."""
    corpus = work / "logmel-corpus"
    if not corpus.exists():
        link_corpus(fsdd_files(), corpus)
    library = write_stereo_library(work / "stereo-library")
    results = []
    for name, folder in (("FSDD", corpus), ("60 min 44.1 kHz stereo", library)):
        results += run_interleaved(name[:8], {
            f"{name}: defaults (auto)": cli_index(folder, work),
            f"{name}: --workers 0": cli_index(folder, work, ("--workers", "0")),
            f"{name}: --workers 1": cli_index(folder, work, ("--workers", "1")),
        }, repeats)
    return results


def workers_table(results: list[Result]) -> str:
    """Each corpus's rows with their throughput as a share of ``--workers 0``'s."""
    lines = ["| corpus: workers | audio s | wall s (best) | median wall s | CPU s, all processes | "
             "audio s / wall s | vs --workers 0 |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        corpus = r.method.split(":")[0]
        base = next(b for b in results if b.method == f"{corpus}: --workers 0")
        lines.append(f"| {r.method} | {r.audio_s:.1f} | {r.wall_s:.2f} | {float(np.median(r.walls)):.2f} | "
                     f"{r.cpu_s:.2f} | {r.speed:.1f} | {r.speed / base.speed:.2f}x |")
    return "\n".join(lines)


def read_table(results: list[Result]) -> str:
    """The read-loop rows, each one's throughput as a share of the bare loop's, and the floors.

    (i) + (f) is the least a cold one-process run that only reads the audio could take; (i) + (j)
    the least one that also computes this recipe's vectors could; neither writes anything.
    """
    by = {r.method[:3]: r for r in results}
    base = by["(f)"]
    lines = ["| method | audio s | wall s (best) | CPU s, all processes (main) | audio s / wall s | vs (f) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.method} | {r.audio_s:.1f} | {r.wall_s:.2f} | {r.cpu_s:.2f} ({r.main_cpu_s:.2f}) | "
                     f"{r.speed:.1f} | {r.speed / base.speed:.2f}x |")
    if "(i)" in by and "(j)" in by:
        for name, loop in (("(i) + (f): cold, reading only", base), ("(i) + (j): cold, this recipe", by["(j)"])):
            wall = by["(i)"].wall_s + loop.wall_s
            lines.append(f"| floor {name} | {base.audio_s:.1f} | {wall:.2f} | | {base.audio_s / wall:.1f} | "
                         f"{base.audio_s / wall / base.speed:.2f}x |")
    return "\n".join(lines)


def write_wav2vec2(folder: Path) -> Path:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config()).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(folder)
    return folder


def write_beats(path: Path) -> Path:
    """BEATs FULL with the golden random weights, rebuilt from the manifest (README section 4)."""
    import zlib

    import torch

    manifest = json.loads(BEATS_MANIFEST.read_text())
    state: dict[str, Any] = {}
    for entry in manifest["tensors"]:
        key = entry["key"]
        if entry["copy_of"] is not None:
            state[key] = state[entry["copy_of"]].clone()
            continue
        z = np.random.RandomState(zlib.crc32(f"{manifest.get('base_seed', 0)}:{key}".encode())).standard_normal(
            size=tuple(entry["shape"]))
        state[key] = torch.from_numpy((entry["mean"] + entry["std"] * z).astype(np.float32))
    torch.save({"cfg": manifest["cfg"], "model": state}, path)
    return path


def bench_model(name: str, checkpoint: Path, work: Path, files: list[Path], workers: int,
                repeats: int, cached: CachedResolve) -> list[Result]:
    """(a)-(d) for one model encoder, at 1 torch thread and at every core.

    The faster (b) is the ceiling. Ingest keeps torch's thread setting (capped at the usable
    cores) whatever ``workers`` is; (d) at 1 thread is what a user on a crowded machine would
    set. Rows run in rotating order, best of ``repeats``.
    """
    import torch

    from retrieval.configure import Choices

    choices = Choices(encoder=name, model=str(checkpoint))
    encoder, recipe = cached(choices, None)
    corpus = link_corpus(files, work / f"{name}-corpus")
    audio_s = duration_s(files)
    windows = decoded_windows(files, recipe)
    naive, ceiling = MODEL_PATHS[name](encoder, checkpoint, files, windows, recipe)
    cores = len(os.sched_getaffinity(0))

    def threads(n: int, fn: Callable[[], Any]) -> Callable[[], float]:
        def run() -> float:
            before = torch.get_num_threads()
            torch.set_num_threads(n)
            try:
                fn()
            finally:
                torch.set_num_threads(before)
            return audio_s
        return run

    counts = sorted({1, cores})
    methods = {f"(a) naive per-file loop, {cores} thr": threads(cores, naive)}
    for n in counts:
        methods[f"(b) ceiling: forward only, {n} thr"] = threads(n, ceiling)
    methods[f"(c) ingest, workers=0, {cores} thr"] = threads(cores, ingest_method(corpus, work, choices, 0))
    for n in counts[::-1]:
        methods[f"(d) ingest, workers={workers}, {n} thr"] = threads(n, ingest_method(corpus, work, choices, workers))
    return run_interleaved(name, methods, repeats)


def wav2vec2_paths(encoder: Any, folder: Path, files: list[Path], windows: list[np.ndarray], recipe: Any):
    import torch
    from transformers import AutoFeatureExtractor, AutoModel

    fe, model = AutoFeatureExtractor.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    # wav2vec2-base (group norm, no attention mask) cannot share a padded forward pass without
    # changing its output, so the encoder runs each distinct length alone, longest first within
    # a batch: so does the ceiling.
    inputs = [torch.from_numpy(fe(w, sampling_rate=16000)["input_values"][0][None])
              for w in embed_order(windows, longest_first=True)]

    def naive() -> None:
        with torch.inference_mode():
            for f in files:
                x = fe(read_resampled(f, 16000), sampling_rate=16000, return_tensors="pt")
                model(**x).last_hidden_state.mean(1)

    def ceiling() -> None:
        with torch.inference_mode():
            for x in inputs:
                encoder.model(x)

    return naive, ceiling


def beats_paths(encoder: Any, path: Path, files: list[Path], windows: list[np.ndarray], recipe: Any):
    import torch

    from retrieval.encoders.beats.fbank import beats_fbank

    model = encoder.model
    fbanks = []
    for w in embed_order(windows):  # the encoder runs a batch's lengths shortest first
        x = np.zeros(max(len(w), encoder._min_samples), np.float32)
        x[: len(w)] = w
        fbanks.append(beats_fbank(torch.from_numpy(x[None])))

    def naive() -> None:
        for f in files:
            x = read_resampled(f, 16000)
            frames = encoder.frame_embeddings(x[None], np.array([len(x)]))
            frames.embeddings[0].mean(0)

    def ceiling() -> None:  # extract_features after the fbank (README section 7b), no padding
        with torch.inference_mode():
            for fb in fbanks:
                tokens = model.layer_norm(model.patch_embedding(fb.unsqueeze(1)).flatten(2).transpose(1, 2))
                model.encoder(model.post_extract_proj(tokens), None)

    return naive, ceiling


def clap_paths(encoder: Any, folder: Path, files: list[Path], windows: list[np.ndarray], recipe: Any):
    import torch
    from transformers import ClapFeatureExtractor, ClapModel

    fe, model = ClapFeatureExtractor.from_pretrained(folder), ClapModel.from_pretrained(folder).eval()
    batches = []
    windows = embed_order(windows)
    for i in range(0, len(windows), encoder.batch_size):
        chunk = windows[i:i + encoder.batch_size]
        width = max(len(w) for w in chunk)
        audio = np.zeros((len(chunk), width), np.float32)
        for j, w in enumerate(chunk):
            audio[j, : len(w)] = w
        batches.append(encoder.features(torch.from_numpy(audio), torch.tensor([len(w) for w in chunk])))

    def naive() -> None:
        with torch.inference_mode():
            for f in files:
                x = fe(read_resampled(f, encoder.sample_rate), sampling_rate=encoder.sample_rate, return_tensors="pt")
                model.get_audio_features(**x)

    def ceiling() -> None:
        with torch.inference_mode():
            for feats, longer in batches:
                encoder.model.audio_projection(encoder.model.audio_model(input_features=feats,
                                                                         is_longer=longer).pooler_output)

    return naive, ceiling


MODEL_PATHS = {"wav2vec2": wav2vec2_paths, "beats": beats_paths, "clap": clap_paths}


# -- memory -------------------------------------------------------------------------------


def memory_child(corpus: str, workers: int) -> None:
    """Run in a fresh process: ingest ``corpus``; print this process's peak RSS (VmHWM) and the peak
    total PSS of it and its descendants (fork server, workers), sampled every 50 ms."""
    import psutil

    import retrieval.encoders.logmel  # noqa: F401  (import cost is not what is measured)
    from retrieval.ingest import IngestOptions, ingest

    me = psutil.Process()
    after_imports = me.memory_info().rss
    peak_total = [0]
    stop = threading.Event()

    def sample() -> None:  # PSS: pages shared by the forked workers count once, split among them
        while not stop.wait(0.05):
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_full_info().pss
                except psutil.Error:
                    pass
            peak_total[0] = max(peak_total[0], total)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        s = ingest(Path(corpus), Path(tmp) / "ix", options=IngestOptions(workers=workers))
        wall = time.perf_counter() - start
    stop.set()
    thread.join()
    hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(json.dumps({"after_imports_mb": after_imports / 2**20, "peak_main_mb": hwm_kb / 1024,
                      "peak_all_mb": peak_total[0] / 2**20, "wall_s": wall, "audio_s": s.audio_seconds,
                      "files": s.files_indexed, "windows": s.windows}))


def write_hour(path: Path, seconds: int = 3600, sr: int = 16000) -> Path:
    """A seeded 1-hour 16 kHz 16-bit mono WAV (noise plus tones that change every 5 s), written in blocks."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", sr, 1, "PCM_16") as f:
        for block in range(0, seconds, 60):
            t = np.arange(60 * sr) / sr
            freqs = np.repeat(rng.uniform(100, 4000, 12), 5 * sr)
            x = 0.05 * rng.standard_normal(60 * sr) + 0.3 * np.sin(2 * np.pi * freqs * t)
            f.write(x.astype(np.float32))
    return path


def bench_memory(work: Path, workers: int) -> list[dict[str, Any]]:
    hour = work / "hour"
    hour.mkdir(exist_ok=True)
    write_hour(hour / "one_hour.wav")
    rows = []
    for label, corpus in (("FSDD, 3000 files", FSDD), ("one 1-hour file", hour)):
        for w in (0, workers):
            out = subprocess.run([sys.executable, __file__, "--memory-child", str(corpus), str(w)],
                                 check=True, capture_output=True, text=True).stdout
            row = {"corpus": label, "workers": w, **json.loads(out.strip().splitlines()[-1])}
            print(f"  memory {label:18s} workers={w}: after imports {row['after_imports_mb']:.0f} MB, "
                  f"peak main {row['peak_main_mb']:.0f} MB RSS, peak all processes {row['peak_all_mb']:.0f} MB PSS, "
                  f"{row['wall_s']:.1f} s", flush=True)
            rows.append(row)
    return rows


# -- precision ----------------------------------------------------------------------------


#: Precisions measured per encoder; ``fp16*`` is fp16 forced on the CPU (see :func:`bench_precision`).
PRECISION_ROWS = (("wav2vec2", ("fp32", "bf16", "int8")), ("beats", ("fp32", "bf16", "int8", "fp16*")),
                  ("clap", ("fp32", "bf16", "int8")))


def bench_precision(work: Path, files: list[Path], checkpoints: dict[str, Path], threads: int) -> list[dict[str, Any]]:
    """Window vectors at each precision vs fp32: cosine, nearest-neighbour agreement, digit kNN@1.

    The encoders refuse fp16 on the CPU (``retrieval.encoders.precision``); the ``fp16*`` row
    measures what it would do: the fp32 encoder run inside ``torch.autocast(cpu, float16)``,
    which reaches the same layers the encoder's own fp16 autocast would (the fbank stays float32).
    """
    import contextlib

    import torch

    from retrieval.configure import Choices, resolve
    from retrieval.embed import embed_windows

    torch.set_num_threads(threads)

    labels = np.array([f.name.split("_")[0] for f in files])
    rows = []
    for name, precisions in PRECISION_ROWS:
        if name not in checkpoints:
            continue
        vecs = {}
        for p in precisions:
            forced = p.endswith("*")
            encoder, recipe = resolve(Choices(encoder=name, model=str(checkpoints[name]),
                                              precision="fp32" if forced else p), None)
            windows = decoded_windows(files, recipe)
            assert len(windows) == len(files), "one window per FSDD file"
            outer = torch.autocast("cpu", dtype=torch.float16) if forced else contextlib.nullcontext()
            start = time.perf_counter()
            with outer:
                vecs[p] = embed_windows(encoder, windows, recipe.pooling, 16)[0]
            wall = time.perf_counter() - start
            cos = _cosine(vecs[p], vecs["fp32"])
            row = {"encoder": name, "precision": p, "files": len(files), "wall_s": wall,
                   "cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
                   "nn_agree": _nn_agreement(vecs[p], vecs["fp32"]), "knn1": _knn1(vecs[p], labels)}
            if forced:
                row["precision"] = f"{p[:-1]} (refused on CPU; forced for this row)"
            print(f"  precision {name:8s} {p:5s} cos min {row['cos_min']:.5f} mean {row['cos_mean']:.5f}, "
                  f"top-1 neighbour same as fp32 {row['nn_agree']:.3f}, digit kNN@1 {row['knn1']:.3f}, "
                  f"{wall:.1f} s", flush=True)
            rows.append(row)
    encoder, recipe = resolve(Choices(), None)
    v = embed_windows(encoder, decoded_windows(files, recipe), recipe.pooling, 16)[0]
    rows.append({"encoder": "logmel", "precision": "float64/32 (numpy)", "files": len(files), "wall_s": 0.0,
                 "cos_min": 1.0, "cos_mean": 1.0, "nn_agree": 1.0, "knn1": _knn1(v, labels)})
    print(f"  precision logmel digit kNN@1 {rows[-1]['knn1']:.3f} (reference: a representation that works)")
    return rows


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def _neighbours(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-30)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    return np.argmax(sim, axis=1)


def _nn_agreement(v: np.ndarray, ref: np.ndarray) -> float:
    return float((_neighbours(v) == _neighbours(ref)).mean())


def _knn1(v: np.ndarray, labels: np.ndarray) -> float:
    return float((labels[_neighbours(v)] == labels).mean())


# -- report -------------------------------------------------------------------------------


def machine() -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")) / 2**20
    return (f"{platform.machine()}, {cpu}, {len(os.sched_getaffinity(0))} cores, {mem:.0f} GiB, "
            f"Python {platform.python_version()}, torch {torch.__version__} (CPU, {torch.get_num_threads()} threads), "
            f"numpy {np.__version__}")


def throughput_table(results: list[Result]) -> str:
    lines = ["| encoder | method | audio s | wall s | CPU s, all processes (main) | audio s / wall s "
             "| vs (b) ceiling |", "|---|---|---:|---:|---:|---:|---:|"]
    ceilings: dict[str, float] = {}
    for r in results:
        if r.method.startswith("(b)"):
            ceilings[r.encoder] = max(ceilings.get(r.encoder, 0.0), r.speed)
    for r in results:
        rel = f"{r.speed / ceilings[r.encoder]:.2f}x" if r.encoder in ceilings else ""
        lines.append(f"| {r.encoder} | {r.method} | {r.audio_s:.1f} | {r.wall_s:.2f} | "
                     f"{r.cpu_s:.2f} ({r.main_cpu_s:.2f}) | "
                     f"{r.speed:.1f} | {rel} |")
    return "\n".join(lines)


def cpu_view(results: list[Result]) -> list[str]:
    """The log-mel rows by CPU time: what 2 idle cores would allow (load-independent, an upper bound)."""
    cores = len(os.sched_getaffinity(0))
    lines = []
    for r in results:
        if r.encoder != "logmel" or not r.method.startswith(("(c)", "(d)")):
            continue
        workers = int(r.method.split("workers=")[1].split(",")[0]) if "workers=" in r.method else 0
        if workers:
            critical = max(r.main_cpu_s, (r.cpu_s - r.main_cpu_s) / workers, r.cpu_s / cores)
            how = (f"the longest of: main process {r.main_cpu_s:.2f} CPU s, each worker "
                   f"{(r.cpu_s - r.main_cpu_s) / workers:.2f}, all {r.cpu_s:.2f} over {cores} cores")
        else:
            critical, how = r.cpu_s, f"{r.cpu_s:.2f} CPU s in one process"
        lines.append(f"- {r.method}: {r.audio_s / critical:.0f}x realtime ({how})")
    if lines:
        lines = ["CPU-time view of the log-mel rows (what the same work would take on 2 idle cores):", ""] \
            + lines + [""]
    return lines


def memory_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| corpus | workers | RSS after imports MB | peak RSS, main process MB | peak PSS, all processes MB "
             "| wall s |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['corpus']} | {r['workers']} | {r['after_imports_mb']:.0f} | {r['peak_main_mb']:.0f} | "
                     f"{r['peak_all_mb']:.0f} | {r['wall_s']:.1f} |")
    return "\n".join(lines)


def precision_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| encoder | precision | files | min cosine to fp32 | mean cosine | top-1 neighbour = fp32's | "
             "digit kNN@1 | embed s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['encoder']} | {r['precision']} | {r['files']} | {r['cos_min']:.5f} | {r['cos_mean']:.5f} | "
                     f"{r['nn_agree']:.3f} | {r['knn1']:.3f} | {r['wall_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--memory-child":
        memory_child(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default="throughput,read,workers,memory,precision",
                        help="comma-separated: throughput, read, workers, memory, precision")
    parser.add_argument("--encoders", default="logmel,wav2vec2,beats,clap", help="encoders for throughput")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes for (d) on FSDD / logmel")
    parser.add_argument("--model-workers", type=int, default=1, help="decoding processes for model encoders")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method (best is kept)")
    parser.add_argument("--model-files", type=int, default=48, help="FSDD files for wav2vec2 and BEATs")
    parser.add_argument("--clap-files", type=int, default=16, help="FSDD files for CLAP (each is a 10 s forward)")
    parser.add_argument("--precision-files", type=int, default=100, help="FSDD files for the precision section")
    parser.add_argument("--no-doc", action="store_true", help=f"do not write {DOC.relative_to(ROOT)}")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    encoders = args.encoders.split(",")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch  # noqa: F401
    from transformers.utils import logging as hf_logging

    import retrieval.ingest as ing

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    began, load_before = time.perf_counter(), os.getloadavg()[0]
    cached = CachedResolve()
    ing.resolve = cached
    results: list[Result] = []
    memory: list[dict[str, Any]] = []
    precision: list[dict[str, Any]] = []
    reading: list[Result] = []
    choosing: list[Result] = []
    checkpoints: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        if "throughput" in sections or "precision" in sections:
            writers = {"wav2vec2": lambda: write_wav2vec2(work / "w2v"),
                       "beats": lambda: write_beats(work / "beats.pt"), "clap": lambda: write_full_clap(work / "clap")}
            wanted = {e for e in encoders if e in writers if "throughput" in sections}
            wanted |= {name for name, _ in PRECISION_ROWS} if "precision" in sections else set()
            for name in sorted(wanted):
                checkpoints[name] = writers[name]()
        if "throughput" in sections:
            boot_workers(max(args.workers, args.model_workers))
            print("throughput (audio seconds per wall second):", flush=True)
            if "logmel" in encoders:
                files = fsdd_files()
                results += bench_logmel(work, files, args.workers, args.repeats)
                results.append(cold_cli(work, files, args.workers))
            for name in ("wav2vec2", "beats", "clap"):
                if name in encoders:
                    n = args.clap_files if name == "clap" else args.model_files
                    results += bench_model(name, checkpoints[name], work, fsdd_files(n), args.model_workers,
                                           args.repeats, cached)
            print(throughput_table(results))
        if "read" in sections:
            print("against reading the audio (FSDD, audio seconds per wall second):", flush=True)
            reading = bench_read(work, fsdd_files(), args.repeats)
            print(read_table(reading))
        if "workers" in sections:
            print("choosing the workers (cold CLI, audio seconds per wall second):", flush=True)
            choosing = bench_workers(work, args.repeats)
            print(workers_table(choosing))
        if "memory" in sections:
            print("memory (peak RSS):", flush=True)
            memory = bench_memory(work, args.workers)
        if "precision" in sections:
            print("precision:", flush=True)
            precision = bench_precision(work, fsdd_files(args.precision_files), checkpoints,
                                        len(os.sched_getaffinity(0)))
    elapsed, load_after = time.perf_counter() - began, os.getloadavg()[0]
    print(f"done in {elapsed:.0f} s; 1-minute load average {load_before:.1f} before, {load_after:.1f} after")
    if not args.no_doc:
        write_doc(args, results, memory, precision, cached.load_s, elapsed, load_before, load_after, reading,
                  choosing)


def write_doc(args: argparse.Namespace, results: list[Result], memory: list[dict[str, Any]],
              precision: list[dict[str, Any]], load_s: dict[str, float], elapsed: float,
              load_before: float, load_after: float, reading: list[Result] | None = None,
              choosing: list[Result] | None = None) -> None:
    """Replace the sections of docs/bench_ingest.md's generated block that this run measured.

    Each section carries the command line, date, machine and load of the run that made it;
    sections this run skipped keep their text (and their run's line) from the file.
    """
    command = "python scripts/bench_ingest.py " + " ".join(a for a in sys.argv[1:])
    run_line = (f"`{command.strip()}`, {time.strftime('%Y-%m-%d')}, {elapsed:.0f} s. Machine: {machine()}. "
                f"1-minute load average {load_before:.1f} before, {load_after:.1f} after (a shared machine: "
                "other jobs were running).")
    fresh: dict[str, list[str]] = {}
    if results:
        fresh["Throughput"] = [throughput_table(results), "", *cpu_view(results)]
        if load_s:
            fresh["Throughput"] += ["Encoder load (once per run, not in the rows above): "
                                    + ", ".join(f"{k} {v:.1f} s" for k, v in load_s.items()), ""]
    if reading:
        fresh["Against reading the audio"] = [read_table(reading), ""]
    if choosing:
        fresh["Choosing the workers"] = [workers_table(choosing), ""]
    if memory:
        fresh["Peak memory (logmel)"] = [memory_table(memory), ""]
    if precision:
        fresh["Precision"] = [precision_table(precision), ""]
    begin, end = "<!-- generated by scripts/bench_ingest.py", "<!-- end generated -->"
    text = DOC.read_text() if DOC.exists() else "# Ingest pipeline benchmark\n\n" + begin + " -->\n" + end + "\n"
    head, _, rest = text.partition(begin)
    block, _, tail = rest.partition(end)
    kept = _generated_sections(block)
    generated = [f"{begin}; do not edit between these markers -->", ""]
    for name in ("Throughput", "Against reading the audio", "Choosing the workers", "Peak memory (logmel)",
                 "Precision"):
        if name in fresh:
            generated += [f"### {name}", "", run_line, "", *fresh[name]]
        elif name in kept:
            generated += [f"### {name}", "", *kept[name], ""]
    generated.append(end)
    DOC.write_text(head + "\n".join(generated) + tail)
    print(f"wrote {DOC.relative_to(ROOT)} ({', '.join(fresh) or 'nothing'} re-measured)")


def _generated_sections(block: str) -> dict[str, list[str]]:
    """``### name`` -> its lines, each starting with the line of the run that measured it.

    A block written before sections had their own run line has one at its top; that line
    is given to each of its sections.
    """
    lines = block.splitlines()[1:]  # the rest of the begin marker's line
    preamble: list[str] = []
    sections: dict[str, list[str]] = {}
    current: list[str] = preamble
    for line in lines:
        if line.startswith("### "):
            current = sections.setdefault(line[4:].strip(), [])
        else:
            current.append(line)
    shared = [line for line in preamble if line.strip()]
    out = {}
    for name, body in sections.items():
        while body and not body[0].strip():
            body = body[1:]
        while body and not body[-1].strip():
            body = body[:-1]
        out[name] = body if body[:1] and body[0].startswith("`python") else [*shared, "", *body]
    return out


if __name__ == "__main__":
    main()
