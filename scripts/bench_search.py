"""Search at scale: FAISS index kinds on clustered vectors, and warm query latency through the API.

(b) ``--n`` (1M) 512-d unit vectors from a mixture of anisotropic Gaussians (``--clusters``
    clusters, each with its own random rank-24 basis, decaying per-direction spreads, a
    random overall scale and a little isotropic noise; cluster sizes log-normal), plus
    ``--queries`` held-out queries from the same mixture. For flat, HNSW (several
    efSearch), IVF-PQ (with and without exact re-ranking) and IVF-Flat: build
    time, bytes per vector, QPS for one batch of all queries and for one query at a
    time, recall@10 against exact search (a returned id counts when its exact score
    reaches the true 10th best, less 1e-4). Flat, HNSW and IVF-PQ are the engine's own
    :class:`~retrieval.store.vectors.VectorIndex` code paths; IVF-Flat is plain FAISS for
    reference (the IVF-PQ lists and quantizer, full vectors: the ceiling of re-ranking).
    Plus single-query flat latency against index size (what ``auto`` is based on).

(c) A ``--api-windows`` (100k) window index built directly in a store (synthetic
    vectors clustered around real log-mel embeddings of synthetic clips: no audio is
    decoded), then ``Index.search`` on a 5 s clip, warm, p50/p95, for each index kind;
    and ``Index.search_text`` on a CLAP index the same way (a tiny random CLAP made by
    ``tests/encoders/_clap_models.py``: no real checkpoint is available offline).

Usage (from the repository root, venv active)::

    python scripts/bench_search.py                       # the numbers in docs/bench_search.md
    python scripts/bench_search.py --n 200000 --queries 300 --api-windows 20000   # a quick run

Everything runs on ``--threads`` (2) FAISS threads.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before libgomp loads: spinning threads starve a shared box

import argparse  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from retrieval.store.vectors import VectorIndex  # noqa: E402

K = 10
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


# -- data -------------------------------------------------------------------------------------


def clustered(n: int, dim: int, n_clusters: int, *, rank: int = 24, noise: float = 0.25,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(n, dim)`` float32 unit vectors from a mixture of anisotropic Gaussians, and ``(n,)`` cluster labels.

    Cluster ``c``: a random unit centre, plus ``coef @ basis_c`` with a random ``(rank, dim)``
    basis and coefficient spreads ``scale_c / sqrt(1..rank)``, plus isotropic noise of norm
    about ``noise * scale_c``; ``scale_c`` is uniform in [0.6, 1.6]; sizes are log-normal.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.lognormal(0.0, 0.7, n_clusters)
    labels = rng.choice(n_clusters, n, p=weights / weights.sum())
    scale = rng.uniform(0.6, 1.6, n_clusters).astype(np.float32)
    decay = (1.0 / np.sqrt(np.arange(1, rank + 1))).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_clusters + 1))
    for c in range(n_clusters):
        rows = order[bounds[c]:bounds[c + 1]]
        if rows.size == 0:
            continue
        basis = rng.standard_normal((rank, dim), dtype=np.float32) / np.sqrt(dim)
        coef = rng.standard_normal((rows.size, rank), dtype=np.float32) * (decay * scale[c])
        iso = rng.standard_normal((rows.size, dim), dtype=np.float32) * (noise * scale[c] / np.sqrt(dim))
        out[rows] = centres[c] + coef @ basis + iso
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out, labels


# -- measurement ------------------------------------------------------------------------------


class Truth:
    """Exact top-10 of the queries, for tie-tolerant recall@10."""

    def __init__(self, x: np.ndarray, q: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> None:
        self.x, self.q, self.ids, self.kth = x, q, ids, scores[:, K - 1]

    def recall(self, got: np.ndarray) -> tuple[float, float]:
        """(recall@10, share of queries with no true top-10 hit at all)."""
        got = got[:, :K]
        valid = got >= 0
        sims = np.einsum("qkd,qd->qk", self.x[np.where(valid, got, 0)], self.q)
        hits = ((sims >= self.kth[:, None] - 1e-4) & valid).sum(axis=1)
        return float(hits.sum() / (K * len(got))), float((hits == 0).mean())


def qps(search: Callable[[np.ndarray], np.ndarray], q: np.ndarray, single: int) -> tuple[float, float, np.ndarray]:
    """(batch QPS over all of ``q``, one-at-a-time QPS over ``single`` queries, batch ids)."""
    t = time.perf_counter()
    ids = search(q)
    batch = len(q) / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(single):
        search(q[i:i + 1])
    one = single / (time.perf_counter() - t)
    return batch, one, ids


ROWS: list[dict] = []


def row(name: str, build_s: float | str, bpv: float | str, batch: float, one: float,
        recall: tuple[float, float], note: str = "") -> None:
    ROWS.append(dict(name=name, build_s=build_s, bpv=bpv, batch=batch, one=one, recall=recall[0], lost=recall[1],
                     note=note))
    log(f"{name}: batch {batch:.0f} QPS, single {one:.0f} QPS, recall@10 {recall[0]:.4f} {note}")


def print_table(flat_batch: float, flat_one: float) -> None:
    print("\n| index | build s | bytes/vector | batch QPS | single QPS | x flat (batch) | x flat (single) | recall@10 "
          "| queries with 0 of 10 | note |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in ROWS:
        b = r["build_s"] if isinstance(r["build_s"], str) else f"{r['build_s']:.1f}"
        bpv = r["bpv"] if isinstance(r["bpv"], str) else f"{r['bpv']:.0f}"
        print(f"| {r['name']} | {b} | {bpv} | {r['batch']:.0f} | {r['one']:.1f} | {r['batch'] / flat_batch:.1f} | "
              f"{r['one'] / flat_one:.1f} | {r['recall']:.4f} | {r['lost']:.1%} | {r['note']} |")


# -- part (b) ---------------------------------------------------------------------------------


def part_b(args: argparse.Namespace) -> None:
    d = 512
    log(f"generating {args.n} + {args.queries} vectors of {d}-d in {args.clusters} clusters of rank {args.rank}")
    data, labels = clustered(args.n + args.queries, d, args.clusters, rank=args.rank, noise=args.noise, seed=args.seed)
    x, q = data[: args.n], np.ascontiguousarray(data[args.n:])
    ids = np.arange(args.n, dtype=np.int64)
    del data

    log("flat: exact ground truth (this is the flat batch measurement)")
    t = time.perf_counter()
    flat = VectorIndex.build(ids, x, "0", "flat")
    flat_build = time.perf_counter() - t
    t = time.perf_counter()
    scores, gt = flat.search(q, 10 * K)
    flat_batch = len(q) / (time.perf_counter() - t)
    truth = Truth(x, q, gt[:, :K], scores[:, :K])
    same = (labels[gt[:, :K]] == labels[args.n:][:, None]).mean()
    t = time.perf_counter()
    for i in range(args.flat_single):
        flat.search(q[i:i + 1], K)
    flat_one = args.flat_single / (time.perf_counter() - t)
    row("Flat (exact)", flat_build, 4 * d + 8, flat_batch, flat_one, (1.0, 0.0), "top-100 per query")
    print(f"\ndata: {args.n} x {d} float32, {args.clusters} clusters of rank {args.rank}, noise {args.noise}; "
          f"{len(q)} held-out queries; "
          f"{same:.1%} of true top-10 in the query's cluster; mean 1st / 10th / 100th score "
          f"{scores[:, 0].mean():.3f} / {scores[:, K - 1].mean():.3f} / {scores[:, -1].mean():.3f}")
    del flat

    log("flat single-query latency against size")
    lat = []
    for n in sorted({min(n, args.n) for n in (10_000, 30_000, 100_000, 300_000, args.n)}):
        index = faiss.IndexFlatIP(d)
        index.add(x[:n])
        reps = 20 if n <= 300_000 else args.flat_single
        t = time.perf_counter()
        for i in range(reps):
            index.search(q[i:i + 1], K)
        lat.append((n, (time.perf_counter() - t) / reps * 1e3))
        del index
    print("\n| flat vectors (512-d) | MB scanned | single-query ms |\n|---:|---:|---:|")
    for n, ms in lat:
        print(f"| {n} | {n * d * 4 / 1e6:.0f} | {ms:.1f} |")

    log("HNSW (engine: IndexIDMap2(IndexHNSWFlat) M=32, efConstruction 40)")
    t = time.perf_counter()
    hnsw = VectorIndex.build(ids, x, "0", "hnsw")
    hnsw_build = time.perf_counter() - t
    inner = faiss.downcast_index(hnsw.index.index)
    hnsw_bpv = (4 * d * args.n + 4 * inner.hnsw.neighbors.size() + 12 * args.n + 16 * args.n) / args.n
    print(f"\nengine HNSW build: {hnsw_build:.0f} s incl. recall check and tuning; "
          f"tuned efSearch {hnsw.params['efSearch']}, self-measured recall@10 {hnsw.recall_at_10}")
    for ef in (16, 32, 64, 128, 256, 512):
        hnsw.params["efSearch"] = ef
        b, o, got = qps(lambda qq: hnsw.search(qq, K)[1], q, args.single)
        row(f"HNSW32 efSearch={ef}", hnsw_build, hnsw_bpv, b, o, truth.recall(got))
    del hnsw, inner

    log("IVF-PQ (engine: IVF lists via an HNSW quantizer, 4-bit fast-scan PQ, exact re-rank from float16)")
    tmp = Path(tempfile.mkdtemp(prefix="bench_search_"))
    try:
        t = time.perf_counter()
        pq = VectorIndex.build(ids, x, "0", "ivfpq")
        pq_build = time.perf_counter() - t
        pq.save(tmp / "s.faiss")
        nlist, m = pq.params["nlist"], pq.params["pq_m"]
        pq_bpv = pq.stats["faiss_bytes"] / args.n
        name = f"IVF{nlist}_HNSW32,PQ{m}x4fs"
        print(f"\nengine IVF-PQ build: {pq_build:.0f} s incl. recall check and tuning; {name}, "
              f"{pq.params['pq_bytes']} bytes/code; tuned nprobe {pq.params['nprobe']}, quantizer efSearch "
              f"{pq.params['quantizer_ef']}, rerank x{pq.params['rerank']}, self-measured recall@10 "
              f"{pq.recall_at_10}; file {pq.stats['faiss_bytes'] / 2**20:.0f} MiB + float16 copy "
              f"{2 * d * args.n / 2**20:.0f} MiB (memory-mapped)")
        tuned = dict(pq.params)
        for nprobe, qef in ((16, 32), (16, 64), (32, 64), (64, 64), (64, 128), (128, 128), (256, 256)):
            knobs = {"nprobe": nprobe, "quantizer_ef": qef}
            b, o, got = qps(lambda qq: pq._faiss_search(qq, K, None, knobs)[1], q, args.single)
            row(f"{name} nprobe={nprobe} qef={qef}, no re-rank", pq_build, pq_bpv, b, o, truth.recall(got))
            for rerank in (5, 10):
                pq.params.update(nprobe=nprobe, quantizer_ef=qef, rerank=rerank)
                b, o, got = qps(lambda qq: pq.search(qq, K)[1], q, args.single)
                row(f"{name} nprobe={nprobe} qef={qef}, re-rank {rerank * K}", pq_build, pq_bpv, b, o,
                    truth.recall(got), f"+{2 * d} B/vector float16 on disk")
        pq.params.update(tuned)
        rerank_latency(pq, q)
        ivf_flat_reference(pq, x, ids, q, truth, args)
        del pq
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(flat_batch, flat_one)


def rerank_latency(pq: VectorIndex, q: np.ndarray) -> None:
    """Per-query cost of the re-rank step alone (float16 memory-mapped rows), warm."""
    short_n = K * int(pq.params["rerank"])
    knobs = {"nprobe": int(pq.params["nprobe"]), "quantizer_ef": int(pq.params["quantizer_ef"])}
    _, short = pq._faiss_search(q[:200], short_n, None, knobs)
    t = time.perf_counter()
    for i in range(200):
        pq._rerank(q[i:i + 1], short[i:i + 1], K)
    ms = (time.perf_counter() - t) / 200 * 1e3
    print(f"\nre-rank of a {short_n}-id shortlist from the memory-mapped float16 copy: {ms:.3f} ms per query (warm)")


def ivf_flat_reference(pq: VectorIndex, x: np.ndarray, ids: np.ndarray, q: np.ndarray, truth: Truth,
                       args: argparse.Namespace) -> None:
    """IVF-Flat (plain FAISS) over the engine's lists and quantizer: the recall ceiling of those lists."""
    from faiss.contrib.ivf_tools import add_preassigned

    log("IVF-Flat reference (plain FAISS, the engine's lists and HNSW quantizer)")
    invlists = pq.index.invlists
    nlist = pq.index.nlist
    t = time.perf_counter()
    list_of = np.empty(args.n, np.int64)
    for lst in range(nlist):
        size = invlists.list_size(lst)
        if size:
            list_of[faiss.rev_swig_ptr(invlists.get_ids(lst), size).copy()] = lst
    ivf = faiss.IndexIVFFlat(pq.index.quantizer, x.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    add_preassigned(ivf, x, list_of, ids)
    build = time.perf_counter() - t
    for nprobe, qef in ((16, 64), (32, 64), (64, 128), (256, 256)):
        params = faiss.SearchParametersIVF(nprobe=nprobe, quantizer_params=faiss.SearchParametersHNSW(efSearch=qef))
        b, o, got = qps(lambda qq: ivf.search(qq, K, params=params)[1], q, args.single)
        row(f"IVF{nlist}_HNSW32,Flat nprobe={nprobe} qef={qef}", f"{build:.1f} + lists",
            (pq.stats["faiss_bytes"] + args.n * (4 * x.shape[1] - pq.params["pq_bytes"])) / args.n, b, o,
            truth.recall(got))
    del ivf


# -- part (c) ---------------------------------------------------------------------------------


def synth_store(root: Path, encoder_choice: dict, n_windows: int, windows_per_file: int,
                centres: np.ndarray, seed: int) -> None:
    """A store of ``n_windows`` window vectors scattered around ``centres`` ``(c, D)``, written
    straight into DuckDB (no audio), then post-processed and indexed like an ingest."""
    from retrieval.configure import Choices, resolve
    from retrieval.store import FileRow, Store

    rng = np.random.default_rng(seed)
    _, recipe = resolve(Choices(**encoder_choice), None)
    dim = recipe.dim
    n_files = n_windows // windows_per_file
    spread = 0.15 * np.median(np.linalg.norm(centres, axis=1))
    with Store.create(root) as store:
        with store.db.transaction():
            store.set_recipe(recipe)
        for a in range(0, n_files, 2000):
            rows = []
            for f in range(a, min(n_files, a + 2000)):
                c = rng.integers(len(centres))
                basis = rng.standard_normal((8, dim), dtype=np.float32) / np.sqrt(dim)
                w = centres[c] + spread * (rng.standard_normal((windows_per_file, 8), dtype=np.float32) @ basis
                                           + 0.3 * rng.standard_normal((windows_per_file, dim), dtype=np.float32)
                                           / np.sqrt(dim))
                hop = recipe.hop_samples
                starts = np.arange(windows_per_file, dtype=np.int64) * hop
                rows.append(FileRow(
                    path=f"synthetic/{f:06d}.wav", size=0, mtime=0.0, content_hash=f"{f:032x}",
                    duration_s=float(starts[-1] + recipe.window_samples) / recipe.sample_rate,
                    sample_rate=recipe.sample_rate, channels=1, format="synthetic",
                    n_samples=int(starts[-1] + recipe.window_samples), status="ok", label=f"c{c}",
                    starts=starts, ends=starts + recipe.window_samples,
                    rms_db=np.full(windows_per_file, -20.0, np.float32), silent=np.zeros(windows_per_file, bool),
                    n_frames=np.full(windows_per_file, 100, np.int64), window_vectors=w.astype(np.float32),
                    file_vector=w.mean(axis=0).astype(np.float32)))
            with store.db.transaction():
                store.db.insert_files(rows, dim)
                store.db.bump_generation()
        with store.db.transaction():
            store.refit_postprocess()
            store.db.set("fitted_generation", store.db.get("generation") or "0")
        store.db.checkpoint()


def percentiles(times: list[float]) -> str:
    a = np.array(times) * 1e3
    return f"{np.percentile(a, 50):.1f} / {np.percentile(a, 95):.1f}"


def part_c(args: argparse.Namespace) -> None:
    from retrieval import synth
    from retrieval.configure import Choices, resolve
    from retrieval.embed import embed_clip
    from retrieval.index import Index
    from retrieval.store import Store

    log(f"(c) {args.api_windows}-window log-mel store, built directly in DuckDB")
    encoder, recipe = resolve(Choices(encoder="logmel"), None)
    centres = []
    for label in synth.DEMO_CLASSES:
        for i in range(40):
            _, windows, _ = embed_clip(encoder, synth.demo_clip(label, i, recipe.sample_rate), recipe.window_samples,
                                       recipe.hop_samples, recipe.pooling)
            centres.append(windows)
    centres = np.concatenate(centres).astype(np.float32)
    rng = np.random.default_rng(7)
    t_audio = np.arange(5 * recipe.sample_rate) / recipe.sample_rate
    clips = [(0.4 * np.sin(2 * np.pi * (300 + 40 * i) * t_audio * (1 + 0.3 * t_audio))
              + 0.05 * rng.standard_normal(t_audio.size)).astype(np.float32) for i in range(args.api_queries)]
    root = Path(tempfile.mkdtemp(prefix="bench_api_"))
    try:
        ix = root / "logmel"
        t = time.perf_counter()
        synth_store(ix, {"encoder": "logmel"}, args.api_windows, 10, centres, seed=3)
        fill_s = time.perf_counter() - t
        print(f"\n(c) {args.api_windows} windows + {args.api_windows // 10} file vectors of dim {recipe.dim} "
              f"written to DuckDB in {fill_s:.0f} s (synthetic: clustered around {len(centres)} real log-mel "
              "window embeddings of synthetic clips)")
        print("\n| index kind | build s | recall@10 (self-measured) | Index.search p50 / p95 ms "
              "| of which embed p50 ms "
              "| search_vector p50 / p95 ms | of which FAISS p50 / p95 ms |\n|---|---:|---:|---:|---:|---:|---:|")
        for kind in ("flat", "hnsw", "ivfpq"):
            with Store.open(ix, writable=True) as store:
                store.set_index_type(kind)
                t = time.perf_counter()
                store.rebuild_all()
                build_s = time.perf_counter() - t
                win = store.vectors("window").describe()
            with Index.open(ix) as idx:
                idx.search(clips[0], k=10, sample_rate=recipe.sample_rate)  # warm: encoder loaded, pages touched
                total, embed, vec, ann = [], [], [], []
                for clip in clips:
                    t = time.perf_counter()
                    idx.search(clip, k=10, sample_rate=recipe.sample_rate)
                    total.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    v = idx.embed(clip, sample_rate=recipe.sample_rate)
                    embed.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    idx.search_vector(v, k=10)
                    vec.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    idx.store.vectors("window").search(v[None], 42)  # what search_files asks FAISS for at k=10
                    ann.append(time.perf_counter() - t)
                duck = duckdb_fetch_ms(idx.store, 100, rng)
            print(f"| {win['index_type']} | {build_s:.1f} | {win['recall_at_10']} | {percentiles(total)} | "
                  f"{np.percentile(np.array(embed) * 1e3, 50):.1f} | {percentiles(vec)} | {percentiles(ann)} |")
        print(f"\nfetching 100 raw vectors by id from DuckDB (the alternative re-rank source): {duck:.1f} ms per query")
        text_latency(args, root, rng)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def duckdb_fetch_ms(store, n_ids: int, rng: np.random.Generator) -> float:
    ids = store.vectors("window").ids()
    times = []
    for _ in range(20):
        pick = rng.choice(ids, n_ids, replace=False).tolist()
        t = time.perf_counter()
        store.db.con.execute("SELECT window_id, vector FROM windows WHERE window_id IN (SELECT unnest(?::BIGINT[]))",
                             [pick]).fetchall()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def text_latency(args: argparse.Namespace, root: Path, rng: np.random.Generator) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from retrieval.configure import Choices, resolve
    from retrieval.index import Index
    from tests.encoders._clap_models import build_tiny_clap

    log("(c) text queries: tiny random CLAP")
    model = build_tiny_clap(root / "tiny_clap")
    encoder, recipe = resolve(Choices(encoder="clap", model=str(model)), None)
    texts = ["a dog barking", "rain on a window", "a bell", "someone speaking", "the sound of a car engine"]
    centres = np.concatenate([encoder.text_embeddings(texts).reshape(len(texts), -1),
                              rng.standard_normal((200, recipe.dim), dtype=np.float32)]).astype(np.float32)
    ix = root / "clap"
    synth_store(ix, {"encoder": "clap", "model": str(model)}, args.api_windows, 10, centres, seed=4)
    with Index.open(ix) as idx:
        win = idx.store.vectors("window").describe()
        idx.search_text(texts[0], k=10)
        total, embed, ann = [], [], []
        for i in range(args.api_queries):
            text = texts[i % len(texts)] + f" {i}"
            t = time.perf_counter()
            idx.search_text(text, k=10)
            total.append(time.perf_counter() - t)
            t = time.perf_counter()
            v = idx.text_vector(text)
            embed.append(time.perf_counter() - t)
            t = time.perf_counter()
            idx.store.vectors("window").search(v[None], 42)
            ann.append(time.perf_counter() - t)
    print(f"\nIndex.search_text on {args.api_windows} windows (tiny random CLAP, dim {recipe.dim}, "
          f"index {win['index_type']}, recall@10 {win['recall_at_10']}): p50 / p95 {percentiles(total)} ms; "
          f"of which text embedding {percentiles(embed)} ms, FAISS {percentiles(ann)} ms")


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="database vectors for (b)")
    p.add_argument("--queries", type=int, default=1000, help="held-out queries for (b)")
    p.add_argument("--clusters", type=int, default=2000)
    p.add_argument("--rank", type=int, default=24, help="dimensions of each cluster's anisotropic spread")
    p.add_argument("--noise", type=float, default=0.25, help="isotropic noise, relative to the cluster's scale")
    p.add_argument("--single", type=int, default=200, help="one-at-a-time queries per ANN setting")
    p.add_argument("--flat-single", type=int, default=10, help="one-at-a-time flat queries at full size")
    p.add_argument("--api-windows", type=int, default=100_000, help="windows in the (c) store")
    p.add_argument("--api-queries", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-b", action="store_true")
    p.add_argument("--skip-c", action="store_true")
    args = p.parse_args()
    faiss.omp_set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB; faiss {faiss.__version__}, "
          f"{args.threads} threads; load average at start {os.getloadavg()[0]:.1f}")
    if not args.skip_b:
        part_b(args)
    if not args.skip_c:
        part_c(args)
    print(f"\ntotal {time.perf_counter() - T0:.0f} s; load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
