"""Benchmark ``retrieve index --engine ray`` against local ingest, and the driver's merge, in one run.

Measured on this machine, in one run:

    (a) local   ``retrieval.ingest.ingest`` as ``retrieve index`` runs it (the encoder in this
                process, torch threads = cores)
    (b) ray     the same call with ``RayEngine(actors=N)`` on a local Ray (``N`` actors of 1 CPU,
                or of 1 GPU with ``--device cuda``): plan here, decode and embed in the actors,
                shards written and merged here. Each run starts its actor pool and loads the
                encoder in every actor, as a user's run does (Ray's own start-up is reported apart).

for the log-mel baseline and a full-size random-weight CLAP (``ClapConfig()``, the
``laion/clap-htsat-unfused`` architecture; speed does not depend on the weights), on a
seeded corpus of 48 kHz float WAV clips of 1-10 s. Both paths write the same index (the
tests check that); throughput is audio seconds per wall second, and the ratio ray/local is
the cost of being distributable.

    (c) merge   the driver's share of a Ray run, alone (``--sections merge``): synthetic embedded
                files (512-d, 20 windows each, 200k windows) streamed through the driver's own
                loop (``ray_ingest.merge_stream``: shards written, merged into DuckDB, deleted),
                then the resume path (the same shards merged by a re-run) and the FAISS build
                (``sync_vectors``), in windows/s of wall and of CPU time.

The Ray run is split into phases (driver set-up, actor processes started, their encoders
ready, first and last result, merge) from timers around :mod:`retrieval.ray_ingest` and in
the actors. From (b)'s per-actor throughput and (c)'s rates, the scaling on paper for 1-64 actors:
cluster windows/s = min(actors x per-actor rate, merge rate). Results go to stdout and
``docs/bench_ray.md``.

Usage: ``python scripts/bench_ray.py [--device cuda] [--clap-minutes 10 --logmel-minutes 10 --actors 2]
[--sections compare,merge]``; only a run of both sections writes ``docs/bench_ray.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _bench import write_full_clap  # noqa: E402

SR = 48_000
DOCS = Path(__file__).resolve().parents[1] / "docs"


def write_corpus(folder: Path, total_s: float, seed: int = 0) -> float:
    """Seeded 48 kHz float WAV clips of 1-10 s (noise, tones, chirps) until ``total_s``; returns seconds written."""
    rng = np.random.default_rng(seed)
    seconds, i = 0.0, 0
    while seconds < total_s:
        n = int(round(rng.uniform(1.0, 10.0) * SR))
        t = np.arange(n) / SR
        f0 = rng.uniform(100, 3000)
        x = (0.3 * rng.standard_normal(n) if i % 3 == 0 else 0.5 * np.sin(2 * np.pi * f0 * t) if i % 3 == 1
             else 0.4 * np.sin(2 * np.pi * (f0 + 800 * t) * t) + 0.05 * rng.standard_normal(n))
        (folder / f"k{i % 5}").mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"k{i % 5}" / f"clip_{i:05d}.wav", x.astype(np.float32), SR, subtype="FLOAT")
        seconds += n / SR
        i += 1
    return seconds


def timed_ingest(corpus: Path, out: Path, choices: Any, embedder: Any, batch: int) -> tuple[float, Any]:
    from retrieval.ingest import IngestOptions, ingest

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = ingest(corpus, out, choices, IngestOptions(batch_size=batch, embedder=embedder,
                                                         on_warning=lambda line: None))
    return time.perf_counter() - start, summary


def synthetic_run(tmp: Path, windows: int, windows_per_file: int, dim: int, part_files: int = 16,
                  seed: int = 0) -> tuple[list[Any], list[Any]]:
    """``(planned entries, embedded parts)`` of synthetic files as a Ray run hands them to the driver.

    ``windows // windows_per_file`` files under ``tmp/corpus`` (never read: the plan names them),
    each with ``windows_per_file`` windows of ``dim``-d float32 vectors (every 7th window
    silent) and a pooled vector; the parts are tables of ``part_files`` files in the shard
    format an actor returns (an ``i`` column into the plan, then the decoded columns).
    """
    from retrieval.audio.decode import AudioInfo, DecodeReport
    from retrieval.ingest import RootedFile
    from retrieval.pipeline import DecodedFile
    from retrieval.shards import decoded_table

    rng = np.random.default_rng(seed)
    root = str(tmp / "corpus")
    n_files = max(1, windows // windows_per_file)
    hop = 160_000
    starts = np.arange(windows_per_file, dtype=np.int64) * hop
    silent = np.arange(windows_per_file) % 7 == 3
    k = int((~silent).sum())
    entries, parts = [], []
    for first in range(0, n_files, part_files):
        decoded = []
        for i in range(first, min(n_files, first + part_files)):
            rel = f"k{i % 5}/clip_{i:06d}.wav"
            entries.append((RootedFile(path=Path(root) / rel, rel_path=rel, size=1000 + i, mtime=1.0, root=root),
                            f"hash{i:06d}", None))
            vectors = rng.standard_normal((k, dim), dtype=np.float32)
            decoded.append(DecodedFile(
                info=AudioInfo(16000, 1, windows_per_file * hop, "WAV"),
                report=DecodeReport(0, windows_per_file * hop, windows_per_file * hop),
                starts=starts, ends=starts + hop, levels=np.where(silent, -80.0, rng.normal(-30, 3, windows_per_file)),
                silent=silent, vectors=vectors, counts=np.full(k, 31, np.int64), window_errors=[None] * k,
                file_vector=vectors.mean(0)))
        table = decoded_table(decoded)
        parts.append(table.add_column(0, "i", pa.array(np.arange(first, first + len(decoded), dtype=np.int64))))
    return entries, parts


def merge_only(tmp: Path, windows: int = 200_000, windows_per_file: int = 20, dim: int = 512,
               commit_files: int | None = None, commit_windows: int | None = None,
               index_type: str | None = "flat") -> dict[str, float]:
    """The driver's share of a Ray run, alone: windows/s of its merge and of the FAISS build after it.

    Synthetic embedded files (:func:`synthetic_run`) stream through the driver's own loop
    (:func:`retrieval.ray_ingest.merge_stream`: each shard written, fsynced and renamed,
    committed to DuckDB in one transaction, deleted), then ``Store.sync_vectors`` builds
    FAISS (``index_type``) as the end of every run does. A second pass times the resume path:
    the same shards left complete on disk, merged by a re-run for the files its plan names.
    """
    from retrieval.ingest import IngestSummary
    from retrieval.ray_ingest import COMMIT_WINDOWS, _merge_old_shards, _Plan, merge_stream
    from retrieval.recipe import Recipe
    from retrieval.shards import SHARDS_DIR, write_shard
    from retrieval.store import Store

    recipe = Recipe(encoder="clap", encoder_options={}, encoder_params={}, sample_rate=48_000,
                    window_samples=480_000, hop_samples=480_000, pooling="mean", postprocess="whiten",
                    precision="fp32", frame_dim=dim, dim=dim, silence_db=-60.0)
    entries, parts = synthetic_run(tmp, windows, windows_per_file, dim)
    n_windows = sum(int(np.asarray(p.column("starts").combine_chunks().value_lengths()).sum()) for p in parts)
    n_vectors = sum(len(p.column("vectors").combine_chunks().values) for p in parts) // dim
    out: dict[str, float] = {"windows": n_windows, "files": len(entries), "dim": dim, "vectors": n_vectors}

    def fresh(name: str) -> Store:
        shutil.rmtree(tmp / name, ignore_errors=True)
        store = Store.create(tmp / name)
        with store.db.transaction():
            store.set_recipe(recipe)
            store.set_index_type(index_type or "flat")
        return store

    quiet = lambda line: None  # noqa: E731
    with fresh("merge_live") as store:
        summary = IngestSummary()
        start, cpu = time.perf_counter(), time.process_time()
        shards = merge_stream(iter(parts), _Plan(entries, recipe.hash()), tmp / "merge_live" / SHARDS_DIR, store,
                              recipe, summary, quiet, commit_files=commit_files,
                              commit_windows=commit_windows or COMMIT_WINDOWS)
        out["merge_s"], out["merge_cpu_s"] = time.perf_counter() - start, time.process_time() - cpu
        out["shards"] = shards
        assert summary.files_indexed == len(entries), summary
        if index_type is not None:
            from retrieval.embed import single_threaded_blas

            start, cpu = time.perf_counter(), time.process_time()
            with single_threaded_blas():  # as ingest runs it
                store.sync_vectors()
            out["faiss_s"], out["faiss_cpu_s"] = time.perf_counter() - start, time.process_time() - cpu
            out["faiss_kind"] = store.vectors("window").kind
            out["faiss_wps"] = n_windows / out["faiss_s"]
    with fresh("merge_resume") as store:
        plan = _Plan(entries, recipe.hash())
        folder = tmp / "merge_resume" / SHARDS_DIR
        whole = pa.concat_tables(parts)
        step = max(1, len(entries) // max(1, shards))
        for number, first in enumerate(range(0, len(entries), step)):
            write_shard(folder, number, plan.shard(whole.slice(first, step))[0])
        summary = IngestSummary()
        start, cpu = time.perf_counter(), time.process_time()
        left = _merge_old_shards(folder, store, recipe, entries, summary, quiet)
        out["resume_s"], out["resume_cpu_s"] = time.perf_counter() - start, time.process_time() - cpu
        assert not left and summary.files_indexed == len(entries), summary
    out["merge_wps"] = n_windows / out["merge_s"]
    out["merge_cpu_wps"] = n_windows / out["merge_cpu_s"]
    out["resume_wps"] = n_windows / out["resume_s"]
    return out


def timed_embedder(log: Path) -> type:
    """An :class:`~retrieval.ray_ingest.Embedder` that appends its start-up and call times to ``log``
    (JSON lines: ``process_start``, ``init_start``, ``init_end``, then ``call_start``/``call_end`` each),
    defined here so that Ray ships it by value to the actors."""
    import json

    from retrieval.ray_ingest import Embedder

    class TimedEmbedder(Embedder):
        def __init__(self, spec: Any) -> None:
            import psutil

            start = time.time()
            super().__init__(spec)
            self._note({"process_start": psutil.Process().create_time(), "init_start": start, "init_end": time.time()})

        def __call__(self, batch: dict) -> Any:
            start = time.time()
            out = super().__call__(batch)
            self._note({"call_start": start, "call_end": time.time(), "files": len(batch["i"])})
            return out

        def _note(self, record: dict) -> None:
            with open(log, "a") as f:
                f.write(json.dumps({"pid": os.getpid(), **record}) + "\n")

    return TimedEmbedder


def actor_times(log: Path, start: float) -> dict[str, float]:
    """From :func:`timed_embedder`'s log: seconds after ``start`` (epoch) at which the actors' processes
    started and their encoders were ready, and their embedding seconds in all."""
    import json

    recs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    inits = [r for r in recs if "init_end" in r]
    calls = [r for r in recs if "call_end" in r]
    if not inits:
        return {}
    return {"actor_process_s": max(r["process_start"] for r in inits) - start,
            "actor_ready_s": max(r["init_end"] for r in inits) - start,
            "actor_init_s": max(r["init_end"] - r["init_start"] for r in inits),
            "embed_calls_s": sum(r["call_end"] - r["call_start"] for r in calls)}


class Phases:
    """Wall-clock marks inside a Ray ingest (patched around :mod:`retrieval.ray_ingest`): where its time goes.

    ``embed_start``: the driver hands the planned files to the engine (encoder loaded, plan
    made); ``first``/``last``: the first and last embedded table reach the driver;
    ``merge_s``: the driver's shard writes and merges; ``end``: ingest returns.
    """

    def __init__(self) -> None:
        import retrieval.ray_ingest as ri

        self.ri = ri
        self.marks: dict[str, float] = {}
        self.merge_s = 0.0
        self._run, self._merge, self._embed = ri._run, ri.merge, ri.embed_on_ray

        def run(*a: Any, **k: Any) -> Any:
            for part in self._run(*a, **k):
                self.marks.setdefault("first", time.perf_counter())
                self.marks["last"] = time.perf_counter()
                yield part

        def merge(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return self._merge(*a, **k)
            finally:
                self.merge_s += time.perf_counter() - t

        def embed(*a: Any, **k: Any) -> Any:
            self.marks["embed_start"] = time.perf_counter()
            return self._embed(*a, **k)

        ri._run, ri.merge, ri.embed_on_ray = run, merge, embed

    def split(self, start: float, end: float) -> dict[str, float]:
        """Seconds of each phase of a run that began at ``start`` and ended at ``end`` (perf_counter)."""
        m = self.marks
        return {"driver_setup_s": m["embed_start"] - start, "to_first_s": m["first"] - m["embed_start"],
                "streaming_s": m["last"] - m["first"], "after_last_s": end - m["last"], "merge_s": self.merge_s}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default="compare,merge",
                    help="Comma-separated: compare (local against Ray), merge (the driver's merge alone).")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="Where the Ray actors embed.")
    ap.add_argument("--actors", type=int, default=None, help="Ray actors (default: cores on cpu, GPUs on cuda).")
    ap.add_argument("--clap-minutes", type=float, default=10.0,
                    help="Minutes of audio in the CLAP corpus (10: the size scripts/bench_clap.py uses).")
    ap.add_argument("--logmel-minutes", type=float, default=10.0,
                    help="Minutes of audio in the log-mel corpus (0 skips it).")
    ap.add_argument("--batch", type=int, default=8, help="Windows per encoder call.")
    ap.add_argument("--merge-windows", type=int, default=200_000, help="Synthetic windows merged by the merge section.")
    ap.add_argument("--merge-windows-per-file", type=int, default=20, help="Windows per synthetic file.")
    ap.add_argument("--index-type", default="flat", help="FAISS kind the merge section builds after merging.")
    args = ap.parse_args(argv)
    sections = set(args.sections.split(","))

    load_start = [round(x, 2) for x in os.getloadavg()]
    rows: list[dict[str, Any]] = []
    merge: dict[str, Any] | None = None
    ray_start_s, actors = 0.0, 0
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "compare" in sections:
            rows, actors, ray_start_s = compare(tmp, args)
        if "merge" in sections:
            merge = merge_only(tmp / "merge", args.merge_windows, args.merge_windows_per_file,
                               index_type=args.index_type)
            print(f"driver merge: {merge['windows']} windows ({merge['files']} files) in {merge['merge_s']:.2f} s = "
                  f"{merge['merge_wps']:.0f} windows/s ({merge['merge_cpu_wps']:.0f} per CPU-second); resume "
                  f"{merge['resume_wps']:.0f} windows/s; FAISS {merge.get('faiss_kind')} build "
                  f"{merge.get('faiss_s', 0):.2f} s")
    load_end = [round(x, 2) for x in os.getloadavg()]
    text = report(rows, merge, args, actors, ray_start_s, load_start, load_end)
    print(text)
    if sections == {"compare", "merge"}:
        (DOCS / "bench_ray.md").write_text(text)


def compare(tmp: Path, args: argparse.Namespace) -> tuple[list[dict[str, Any]], int, float]:
    """Local ingest against Ray on the same corpora, in one run: ``(rows, actors, Ray start-up s)``."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    import torch

    from retrieval.configure import Choices
    from retrieval.ray_ingest import RayEngine

    cores = len(os.sched_getaffinity(0))
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    actors = args.actors or (gpus if args.device == "cuda" else cores)
    # As in tests/test_ray_ingest.py: Ray's processes import jsonschema, which builds
    # rfc3987_syntax's Lark grammar (installed by the dev extra), seconds of CPU each on a busy
    # machine; they get a stand-in that is absent. And the raylet gets longer than 15 s to start.
    hidden = tmp / "ray_path"
    hidden.mkdir(parents=True, exist_ok=True)
    (hidden / "rfc3987_syntax.py").write_text("raise ImportError('hidden from Ray processes')\n")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(hidden), str(Path(__file__).resolve().parents[1]),
                                                os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
    t0 = time.perf_counter()
    try:
        ray.init(address="local", num_cpus=cores, num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # Ray's raylet gives its agents a fixed 15 s (ray-project/ray#65983): once more
        if "timed out during startup" not in str(exc):
            raise
        ray.shutdown()
        ray.init(address="local", num_cpus=cores, num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    ray_start_s = time.perf_counter() - t0
    print(f"Ray started in {ray_start_s:.1f} s; {cores} cores, {gpus} GPUs, {actors} actors on {args.device}")
    engine = RayEngine(actors=actors, gpus_per_actor=1.0 if args.device == "cuda" else 0.0)
    phases = Phases()
    rows: list[dict[str, Any]] = []
    clap_dir = write_full_clap(tmp / "clap")
    for name, minutes, choices in (
        ("logmel", args.logmel_minutes, Choices()),
        ("clap (full-size, random)", args.clap_minutes,
         Choices(encoder="clap", model=str(clap_dir), device=args.device if args.device == "cuda" else "cpu")),
    ):
        if minutes <= 0:
            continue
        corpus = tmp / f"corpus_{name.split()[0]}"
        audio_s = write_corpus(corpus, minutes * 60)
        warm = tmp / f"warm_{name.split()[0]}"
        for p in sorted(corpus.rglob("*.wav"))[:2]:
            (warm / p.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, warm / p.parent.name / p.name)
        timed_ingest(warm, tmp / "warm_index", choices, None, args.batch)  # imports and caches: not timed
        local_s, local = timed_ingest(corpus, tmp / "local", choices, None, args.batch)
        phases.marks.clear()
        phases.merge_s = 0.0
        import retrieval.ray_ingest as ri

        log = tmp / f"actors_{name.split()[0]}.jsonl"
        real_embedder, ri.Embedder = ri.Embedder, timed_embedder(log)
        start, epoch = time.perf_counter(), time.time()
        try:
            ray_s, on_ray = timed_ingest(corpus, tmp / "ray", choices, engine, args.batch)
        finally:
            ri.Embedder = real_embedder
        split = {**phases.split(start, start + ray_s), **actor_times(log, epoch)}
        assert (local.files_indexed, local.windows) == (on_ray.files_indexed, on_ray.windows)
        row = {"encoder": name, "audio_s": audio_s, "windows": on_ray.windows, "local_s": local_s,
               "ray_s": ray_s, "local_x": audio_s / local_s, "ray_x": audio_s / ray_s, "ratio": local_s / ray_s,
               # windows per second of an actor's embedding calls (start-up excluded)
               "per_actor_wps": on_ray.windows / max(split.get("embed_calls_s", ray_s * actors), 1e-9),
               "loadavg": [round(x, 2) for x in os.getloadavg()], **split}
        rows.append(row)
        print(f"{name}: {audio_s:.0f} s audio, {on_ray.windows} windows; local {local_s:.1f} s "
              f"({row['local_x']:.1f}x realtime), ray {ray_s:.1f} s ({row['ray_x']:.1f}x); ray/local "
              f"{row['ratio']:.2f}; ray phases " + ", ".join(f"{k} {v:.1f}" for k, v in split.items()))
    ray.shutdown()
    return rows, actors, ray_start_s


def report(rows: list[dict], merge: dict | None, args: argparse.Namespace, actors: int, ray_start_s: float,
           load_start: list[float], load_end: list[float]) -> str:
    """``docs/bench_ray.md``: the comparison, the driver's merge, and the scaling on paper."""
    parts = [f"""# Ingest on Ray

`scripts/bench_ray.py --sections {args.sections} --device {args.device} --clap-minutes {args.clap_minutes:g} \
--logmel-minutes {args.logmel_minutes:g} --merge-windows {args.merge_windows}`

on {platform.machine()} with {len(os.sched_getaffinity(0))} cores (load average {load_start} at the start, \
{load_end} at the end; the machine is shared, so wall times stretch with the load and CPU-seconds are given
beside them).
"""]
    if rows:
        table = ["| encoder | audio (s) | windows | local (s) | local x realtime | ray (s) | ray x realtime | ray / local |",
                 "|---|---|---|---|---|---|---|---|"]
        phases = ["| encoder | driver set-up (s) | actor processes started at (s) | actors' encoders ready at (s) | "
                  "to first result (s) | streaming (s) | after last (s) | of which merge (s) | actors embedding (s, summed) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            table.append(f"| {r['encoder']} | {r['audio_s']:.0f} | {r['windows']} | {r['local_s']:.1f} | "
                         f"{r['local_x']:.1f} | {r['ray_s']:.1f} | {r['ray_x']:.1f} | {r['ratio']:.2f} |")
            phases.append(f"| {r['encoder']} | {r['driver_setup_s']:.1f} | {r.get('actor_process_s', 0):.1f} | "
                          f"{r.get('actor_ready_s', 0):.1f} | {r['to_first_s']:.1f} | {r['streaming_s']:.1f} | "
                          f"{r['after_last_s']:.1f} | {r['merge_s']:.1f} | {r.get('embed_calls_s', 0):.1f} |")
        parts.append(f"""## Local ingest against Ray, same corpus, same run

{actors} Ray actor(s) on {args.device}. Ray's own start-up took {ray_start_s:.1f} s and is not counted.
Every run, local or Ray, counts its encoder loads (the Ray run's driver loads it to fix the
recipe, and each actor loads it once) and the Ray run counts its actors' start-up, as a
user's run would. An untimed ingest of two clips first pays the imports.

{chr(10).join(table)}

Where the Ray run's time went (driver set-up: encoder load and plan, as in the local run; to
first result: Ray Data planning, actor start-up and encoder loads in the actors, the first
block; streaming: first to last result; after last: the rest of the merge, FAISS and closing):

{chr(10).join(phases)}
""")
    if merge is not None:
        per_actor = [r["per_actor_wps"] for r in rows if r["encoder"].startswith("clap")]
        parts.append(f"""## The driver's merge, alone

{merge['windows']} synthetic windows ({merge['files']} files of {args.merge_windows_per_file} windows, every 7th
silent, {merge['vectors']} {merge['dim']}-d vectors plus one pooled vector per file) streamed through the
driver's own loop (`ray_ingest.merge_stream`): {merge['shards']} shards, each written (fsynced,
renamed), merged into DuckDB in one transaction and deleted.

- **Merge: {merge['merge_wps']:,.0f} windows/s** ({merge['merge_s']:.1f} s wall; {merge['merge_cpu_wps']:,.0f} windows
  per CPU-second of this process, {merge['merge_cpu_s']:.1f} s).
- Resume (the same shards left on disk by a killed driver, merged by a re-run):
  {merge['resume_wps']:,.0f} windows/s ({merge['resume_s']:.1f} s wall, {merge['resume_cpu_s']:.1f} CPU-s).
""")
        if "faiss_s" in merge:
            parts.append(f"""- FAISS after the merge (`sync_vectors`: the whitening fit and a {merge['faiss_kind']} build of both
  levels, once per run): {merge['faiss_wps']:,.0f} windows/s ({merge['faiss_s']:.1f} s wall, {merge['faiss_cpu_s']:.1f} CPU-s).
""")
        if per_actor:
            pa_wps = per_actor[0]
            scale = ["| actors | embed capacity (windows/s) | driver merge (windows/s) | cluster (windows/s) | bottleneck |",
                     "|---|---|---|---|---|"]
            for n in (1, 2, 4, 8, 16, 32, 64):
                cap = n * pa_wps
                scale.append(f"| {n} | {cap:,.0f} | {merge['merge_wps']:,.0f} | {min(cap, merge['merge_wps']):,.0f} | "
                             f"{'actors' if cap < merge['merge_wps'] else 'driver merge'} |")
            parts.append(f"""
## Scaling on paper (CLAP windows)

Per-actor throughput measured above (windows over the seconds the actors spent in embedding
calls, start-up excluded): {pa_wps:.2f} windows/s ({args.device}, one CPU each). The cluster embeds
`actors x per-actor` windows/s until the driver's merge rate caps it:

{chr(10).join(scale)}
""")
    return "\n".join(parts)


if __name__ == "__main__":
    main()
