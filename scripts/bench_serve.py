"""Load test of `retrieve serve` on loopback: 16 clients, 2,000 mixed requests, a 100k-window index.

(a) **API under load.** A log-mel store of ``--windows`` (100,000) window vectors is
written straight into DuckDB (``bench_search.synth_store``: clustered around real
log-mel embeddings of synthetic clips; 10 windows per file), FAISS built as ``auto``
picks. Its 10,000 files are symlinks to 20 real 22 s WAV files, so audio slices and
thumbnails decode real audio. ``retrieve serve`` runs in its own process; ``--clients``
threads, each with its own HTTP connection, send ``--requests`` requests drawn at
random (seeded): search by indexed-file id (40 %), search by an uploaded 5 s clip
(20 %), a 4 s audio slice (20 %), a spectrogram thumbnail of a random window (20 %,
so mostly cache misses). Server-side time is the ``Server-Timing`` header (from the
request reaching the app to the response being ready, queueing for the index
included), split into the time spent holding the index (the search itself) and the
rest; client time adds HTTP and the client's own threads. The run stops at
``--requests`` or ``--max-s`` seconds, whichever comes first. The load runs three times
in one run, on three fresh servers, so the ratios between them are measured on the same
machine at the same time: the default (uploads and uncached thumbnails take one of
``--heavy-slots``, half the cores by default, and are decoded, embedded and rendered in
as many worker processes, so they neither queue searches by id nor hold the server's
GIL), the same bulkhead with that work in the server's own threads
(``--heavy-processes 0``, the previous default), and no limit at all (``--heavy-slots 0
--heavy-processes 0``).

(b) **Time to first results in a browser** (with ``--browser``, when Playwright and
chromium are present): the demo index (FSDD, or the synthetic demo corpus), a 5 s clip
uploaded through the page's file input, and the time from the input's ``change`` event
to the results being in the page, and to every thumbnail having loaded.

    python scripts/bench_serve.py [--browser]     # writes docs/bench_serve.md
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import io  # noqa: E402
import platform  # noqa: E402
import queue  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_search import synth_store  # noqa: E402

DOC = REPO / "docs" / "bench_serve.md"
SHARED_FSDD = REPO.parent / "shared" / "data" / "fsdd"
MIX = {"search by file id": 0.4, "search by upload": 0.2, "audio slice": 0.2, "thumbnail": 0.2}
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wav(audio: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def build_store(root: Path, n_windows: int) -> tuple[Path, int, float]:
    """The 100k-window store with real audio behind every file; returns (index, files, seconds)."""
    from retrieval import synth
    from retrieval.configure import Choices, resolve
    from retrieval.embed import embed_clip
    from retrieval.store import Store

    encoder, recipe = resolve(Choices(encoder="logmel"), None)
    centres = np.concatenate([
        embed_clip(encoder, synth.demo_clip(label, i, recipe.sample_rate), recipe.window_samples,
                   recipe.hop_samples, recipe.pooling)[1]
        for label in synth.DEMO_CLASSES for i in range(40)]).astype(np.float32)
    ix, corpus = root / "ix", root / "corpus"
    t = time.perf_counter()
    synth_store(ix, {"encoder": "logmel"}, n_windows, 10, centres, seed=3)
    real = corpus / "real"
    real.mkdir(parents=True)
    sr = recipe.sample_rate
    for i in range(20):  # 22 s: the span of 10 windows of 4 s every 2 s
        label = synth.DEMO_CLASSES[i % len(synth.DEMO_CLASSES)]
        x = np.resize(synth.demo_clip(label, i, sr), 22 * sr)
        sf.write(real / f"{i:02d}.wav", x, sr, subtype="PCM_16")
    (corpus / "synthetic").mkdir()
    n_files = n_windows // 10
    for f in range(n_files):
        (corpus / "synthetic" / f"{f:06d}.wav").symlink_to(real / f"{f % 20:02d}.wav")
    with Store.open(ix, writable=True) as store:
        with store.db.transaction():
            store.db.set_roots([str(corpus)])
        store.rebuild_all()
        store.db.checkpoint()
    return ix, n_files, time.perf_counter() - t


def start_server(ix: Path, port: int, log_path: Path, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "retrieval", "serve", "--index", str(ix), "--port", str(port),
                             *extra], cwd=REPO, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not answer within 180 s")


def plan(n: int, n_files: int, seed: int) -> list[tuple[str, dict]]:
    rng = np.random.default_rng(seed)
    kinds = rng.choice(list(MIX), size=n, p=list(MIX.values()))
    out = []
    for kind in kinds:
        f = int(rng.integers(n_files))
        w = int(rng.integers(10))
        out.append((str(kind), {"file_id": f, "start_s": 2.0 * w, "end_s": 2.0 * w + 4.0,
                                "clip": int(rng.integers(8))}))
    return out


def load_test(base: str, requests: list[tuple[str, dict]], file_ids: np.ndarray, clients: int, max_s: float
              ) -> tuple[list[tuple[str, int, float, float, float]], float]:
    import httpx

    from retrieval import synth

    sr = 16000
    t = np.arange(5 * sr) / sr
    rng = np.random.default_rng(11)
    uploads = [wav((0.4 * np.sin(2 * np.pi * (300 + 40 * i) * t * (1 + 0.3 * t))
                    + 0.05 * rng.standard_normal(t.size)).astype(np.float32), sr) for i in range(4)]
    uploads += [wav(np.resize(synth.demo_clip(lab, 90, sr), 5 * sr), sr) for lab in synth.DEMO_CLASSES[:4]]
    todo: queue.Queue = queue.Queue()
    for r in requests:
        todo.put(r)
    results: list[tuple[str, int, float, float, float]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + max_s

    def client() -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            while time.monotonic() < deadline:
                try:
                    kind, a = todo.get_nowait()
                except queue.Empty:
                    return
                fid = int(file_ids[a["file_id"]])
                t0 = time.perf_counter()
                try:
                    if kind == "search by file id":
                        r = http.post("/api/search", data={"file_id": fid, "k": 10})
                    elif kind == "search by upload":
                        r = http.post("/api/search", files={"file": ("q.wav", uploads[a["clip"]], "audio/wav")},
                                      data={"k": 10})
                    elif kind == "audio slice":
                        r = http.get(f"/api/files/{fid}/audio", params={"start_s": a["start_s"], "end_s": a["end_s"]})
                    else:
                        r = http.get(f"/api/files/{fid}/spectrogram.png",
                                     params={"start_s": a["start_s"], "end_s": a["end_s"]})
                    status = r.status_code
                    timing = dict(part.strip().split(";dur=") for part in r.headers.get("server-timing").split(","))
                    server, held = float(timing["app"]), float(timing.get("index", "nan"))
                except httpx.HTTPError:
                    status, server, held = 0, float("nan"), float("nan")
                with lock:
                    results.append((kind, status, server, held, (time.perf_counter() - t0) * 1e3))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return results, time.perf_counter() - t0


def pct(values: list[float]) -> str:
    a = np.array([v for v in values if np.isfinite(v)])
    return "-" if not a.size else " / ".join(f"{np.percentile(a, q):.1f}" for q in (50, 95, 99))


def table(results: list[tuple[str, int, float, float, float]]) -> list[str]:
    rows = ["| request | n | errors | server p50 / p95 / p99 ms | of which holding the index | "
            "client p50 / p95 / p99 ms |", "|---|---:|---:|---:|---:|---:|"]
    for kind in [*MIX, "all"]:
        sel = [r for r in results if kind == "all" or r[0] == kind]
        errors = sum(1 for r in sel if r[1] != 200)
        name = f"**{kind}**" if kind == "search by file id" else kind
        rows.append(f"| {name} | {len(sel)} | {errors} | {pct([r[2] for r in sel])} | {pct([r[3] for r in sel])} "
                    f"| {pct([r[4] for r in sel])} |")
    return rows


def browser_first_results(k: int, fsdd: Path) -> list[str]:
    """Part (b): ms from choosing a 5 s clip to results (and thumbnails) on the page, 5 uploads."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return ["(b) skipped: playwright is not installed"]
    chromium = shutil.which("chromium")
    if not chromium:
        return ["(b) skipped: no chromium binary"]
    from retrieval import synth
    from retrieval.index import Index

    root = Path(tempfile.mkdtemp(prefix="bench_serve_demo_"))
    try:
        if (fsdd / "recordings").is_dir():
            corpus, what = fsdd / "recordings", "FSDD (3,000 recordings), as `scripts/demo.sh` indexes it"
        else:
            corpus, what = root / "corpus", "the synthetic demo corpus"
            synth.write_demo_corpus(corpus)
        t = time.perf_counter()
        Index.build(corpus, root / "demo").close()
        build_s = time.perf_counter() - t
        recs = sorted(corpus.rglob("*.wav"))[:40]
        clips = []
        for i in range(5):
            parts = [sf.read(p, dtype="float32") for p in recs[i * 8:(i + 1) * 8]]
            sr = parts[0][1]
            clips.append(root / f"query_{i}.wav")
            sf.write(clips[-1], np.resize(np.concatenate([p[0] for p in parts]), 5 * sr), sr)
        port = free_port()
        proc = start_server(root / "demo", port, root / "server.log")
        times = []
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_function("document.querySelector('#summary').textContent.includes('files')")
                page.fill("#k", str(k))
                page.press("#k", "Tab")
                for clip in clips:
                    page.evaluate("""() => { window.__t = null; document.querySelector('#results').innerHTML = '';
                        document.querySelector('#file').addEventListener('change',
                          () => { window.__t = performance.now(); }, { once: true }); }""")
                    page.set_input_files("#file", str(clip))
                    page.wait_for_function(f"document.querySelectorAll('#results .hit').length === {k}")
                    hits_ms = page.evaluate("performance.now() - window.__t")
                    page.wait_for_function("[...document.querySelectorAll('#results .thumb')]"
                                           ".every(i => i.complete && i.naturalWidth > 0)")
                    thumbs_ms = page.evaluate("performance.now() - window.__t")
                    times.append((hits_ms, thumbs_ms))
                browser.close()
        finally:
            proc.terminate()
            proc.wait(30)
        h = np.array(times)
        return [f"(b) demo index: {what}; built in {build_s:.1f} s. Five 5 s clips (8 recordings each, "
                f"concatenated) uploaded through the page's file input, k = {k}, headless chromium:",
                "",
                "| | median ms | max ms |", "|---|---:|---:|",
                f"| change event -> {k} results in the page | {np.median(h[:, 0]):.0f} | {h[:, 0].max():.0f} |",
                f"| change event -> every thumbnail loaded | {np.median(h[:, 1]):.0f} | {h[:, 1].max():.0f} |"]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--windows", type=int, default=100_000)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--max-s", type=float, default=240.0, help="stop sending after this many seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--browser", action="store_true", help="also time first results in a real browser (b)")
    p.add_argument("--fsdd", type=Path, default=SHARED_FSDD, help="FSDD folder (with recordings/) for (b)")
    p.add_argument("--store", type=Path, default=None,
                   help="keep the store in this folder and reuse it when a previous run left one there "
                        "(same --windows); default: a temporary folder, removed at the end")
    args = p.parse_args()
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
               f"load average at start {os.getloadavg()[0]:.1f}")
    log(machine)
    root = args.store.resolve() if args.store else Path(tempfile.mkdtemp(prefix="bench_serve_"))
    try:
        if args.store and (root / "ix").is_dir() and (root / "n_windows").read_text() == str(args.windows):
            ix, n_files, fill_s = root / "ix", args.windows // 10, float("nan")
            log(f"reusing the {args.windows}-window store in {root}")
        else:
            if args.store:
                shutil.rmtree(root, ignore_errors=True)
            log(f"building a {args.windows}-window log-mel store")
            ix, n_files, fill_s = build_store(root, args.windows)
            (root / "n_windows").write_text(str(args.windows))
        from retrieval.store import Store

        with Store.open(ix) as store:
            win = store.vectors("window").describe()
            file_ids = np.array(sorted(fid for fid, *_ in store.db.known_files().values()), np.int64)
        log(f"store ready in {fill_s:.0f} s ({win['index_type']})")
        from retrieval.serve.app import default_heavy_slots

        runs = {}
        loads = {}
        for label, extra in ((f"{default_heavy_slots()} heavy slot(s) in worker processes (the default)", ()),
                             ("the same bulkhead in the server process (--heavy-processes 0)",
                              ("--heavy-processes", "0")),
                             ("no bulkhead, in the server process (--heavy-slots 0 --heavy-processes 0)",
                              ("--heavy-slots", "0", "--heavy-processes", "0"))):
            log(f"starting a server: {label}")
            port = free_port()
            proc = start_server(ix, port, root / "server.log", extra)
            base = f"http://127.0.0.1:{port}"
            try:
                warm = plan(8, n_files, args.seed + 1)
                load_test(base, warm, file_ids, 1, 120)  # encoder loaded, FAISS and caches touched
                log(f"1 client, {args.requests // 10} requests (service time without queueing)")
                alone = load_test(base, plan(args.requests // 10, n_files, args.seed + 2), file_ids, 1,
                                  args.max_s / 4)
                log(f"{args.clients} clients, {args.requests} requests")
                loads[label] = os.getloadavg()[0]
                loaded = load_test(base, plan(args.requests, n_files, args.seed), file_ids, args.clients,
                                   args.max_s)
            finally:
                proc.terminate()
                proc.wait(30)
            runs[label] = (alone, loaded)
        lines = [
            "# Serving: `retrieve serve` under load", "",
            f"Generated by `python scripts/bench_serve.py{''.join(' ' + a for a in sys.argv[1:])}` "
            f"(seed {args.seed}); every number below is from that run.", "",
            "## Protocol", "",
            *__doc__.split("\n\n")[1].splitlines(), "",
            *__doc__.split("\n\n")[2].splitlines(), "",
            "## Results", "",
            f"Machine: {machine}. Store: {args.windows} windows in {n_files} files, dim 160, FAISS "
            f"`{win['index_type']}` (recall@10 {win.get('recall_at_10')}), "
            + (f"filled in {fill_s:.0f} s." if np.isfinite(fill_s) else "reused from an earlier run (--store)."), "",
        ]
        summary = ["| server | search by id p50 / p95 ms (server) | all requests/s | errors | target | "
                   "load average before |", "|---|---:|---:|---:|---|---:|"]
        for label, ((alone, alone_wall), (results, wall)) in runs.items():
            sel = [r[2] for r in results if r[0] == "search by file id" and r[1] == 200]
            p50, p95 = np.percentile(sel, 50), np.percentile(sel, 95)
            held = [r[3] for r in results if r[0] == "search by file id" and r[1] == 200]
            errors = sum(1 for r in results if r[1] != 200)
            verdict = "met" if p50 <= 20 and p95 <= 50 and errors == 0 else "NOT met"
            summary.append(f"| {label} | {p50:.1f} / {p95:.1f} | {len(results) / wall:.0f} | {errors} | {verdict} "
                           f"| {loads[label]:.1f} |")
            lines += [
                f"### {label}", "",
                f"(a) {len(results)} requests from {args.clients} clients in {wall:.1f} s "
                f"({len(results) / wall:.0f} requests/s), {errors} errors; load average "
                f"{loads[label]:.1f} before it:", "",
                *table(results), "",
                f"The same mix from **one client** ({len(alone)} requests in {alone_wall:.1f} s), so no request "
                "waits for another: the service time.", "",
                *table(alone), "",
                f"Target for search by indexed-file id, server side: p50 <= 20 ms and p95 <= 50 ms with 0 errors: "
                f"**{verdict}** (p50 {p50:.1f} ms, p95 {p95:.1f} ms; holding the index p50 "
                f"{np.percentile(held, 50):.1f} ms, p95 {np.percentile(held, 95):.1f} ms).", "",
            ]
        lines += [
            "### All three servers, same run", "", *summary, "",
            f"Without the bulkhead, {args.clients} clients that each wait for an answer keep {args.clients} "
            "requests in one Python process, so by Little's law each request mostly waits for the ones ahead "
            "of it, cheap or not. With it, uploads and thumbnail renders queue for their slot(s) while "
            "searches by id go past them; the heavy requests pay that wait instead (their rows above). "
            "In the server's own threads, the heavy request that holds the slot still holds the GIL for most "
            "of its run (decoding, log-mel, colour-mapping), so a search by id waits for the interpreter "
            "even with a core idle; in a worker process it waits only for a core, and since the worker runs "
            "at a lower CPU priority (nice +10) the OS hands that core to the search first. What is left is "
            "the search itself (\"holding the index\": one search at a time per index; FAISS with one "
            "OpenMP thread, the query's file vector and its hits looked up in arrays kept in memory) and the "
            "CPU shared with the load generator's own threads and anything else on the machine (the load "
            "average beside each run).", "",
            f"Load average at end {os.getloadavg()[0]:.1f}; total {time.perf_counter() - T0:.0f} s.", "",
        ]
        if args.browser:
            log("(b) first results in a browser")
            lines += browser_first_results(10, args.fsdd) + [""]
        text = "\n".join(lines)
        print(text)
        DOC.write_text(text)
        log(f"wrote {DOC}")
    finally:
        if not args.store:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
