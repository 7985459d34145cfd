"""What one click of the serve page's labelling loop costs on a big index, against a search by id.

A log-mel store of ``--windows`` window vectors (``bench_search.synth_store``, 10 windows per
file, no audio needed) is served in this process through FastAPI's test client. Timed, each
as the median of ``--repeat`` calls, one after another:

- ``POST /api/labels`` of one window (the window's span is read from the snapshot served, the
  label is one transaction of ``labels.sqlite``, and the target's counts are read back);
- ``POST /api/search`` by indexed-file id (the cheap request the page makes most);
- ``POST /api/train`` (linear head, default weak negatives), ``POST /api/score`` and
  ``GET /api/suggest`` (margin, 20 windows): one round of "Train & suggest".

Client-side wall time, so HTTP parsing in the test client is included. The ratios are
measured in the same run. Prints a markdown table; ``--doc PATH`` also writes it there.

    python scripts/bench_serve_labels.py [--windows 100000] [--repeat 5] [--index-type auto]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_search import synth_store  # noqa: E402

NOTE = ("A label is one transaction of `labels.sqlite` beside `meta.duckdb` (the window's span is read "
        "from the snapshot served): no writer of the live database, no snapshot published or opened. "
        "Training and scoring read every window's vector, and publish a snapshot for the head and scores.")


def timed(call, repeat: int) -> float:  # type: ignore[no-untyped-def]
    """Median seconds of ``repeat`` calls of ``call(i)``; each must answer 200."""
    out = []
    for i in range(repeat):
        start = time.perf_counter()
        res = call(i)
        out.append(time.perf_counter() - start)
        assert res.status_code == 200, res.text
    return statistics.median(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--index-type", default="auto",
                        help="FAISS index kind (flat keeps the build of a 1M-window store to seconds)")
    parser.add_argument("--doc", type=Path)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from retrieval.configure import Choices, resolve
    from retrieval.serve.app import create_app
    from retrieval.serve.indexes import IndexSet
    from retrieval.store import Store

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    rng = np.random.default_rng(0)
    _, recipe = resolve(Choices(encoder="logmel"), None)
    centres = rng.standard_normal((40, recipe.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        ix = Path(tmp) / "ix"
        t = time.perf_counter()
        synth_store(ix, {"encoder": "logmel"}, args.windows, 10, centres, seed=3)
        with Store.open(ix, writable=True) as store:
            store.set_index_type(args.index_type)
            store.rebuild_all()
        build_s = time.perf_counter() - t
        held = IndexSet([ix])
        client = TestClient(create_app(held, heavy_processes=0), base_url="http://127.0.0.1:8000")  # a loopback host takes writes
        with held.get(None).use() as snap:
            ids = snap.index.store.search_vectors("window")[0]
            db_mib = (snap.index.store.files_dir / "meta.duckdb").stat().st_size / 2**20
            files = rng.choice(snap.files.index.to_numpy(), args.repeat, replace=False).tolist()
        picks = rng.choice(ids, 4 * args.repeat + 4, replace=False).tolist()
        client.post("/api/labels", data={"target": "bench", "label": "positive", "window_id": picks[-1]})  # warm
        client.post("/api/labels", data={"target": "bench", "label": "negative", "window_id": picks[-2]})
        label_s = timed(lambda i: client.post("/api/labels", data={
            "target": "bench", "label": "positive" if i % 2 else "negative", "window_id": picks[i]}), args.repeat)
        search_s = timed(lambda i: client.post("/api/search", data={"file_id": files[i], "k": 10}), args.repeat)
        train_s = timed(lambda i: client.post("/api/train", data={"target": "bench"}), args.repeat)
        score_s = timed(lambda i: client.post("/api/score", data={"target": "bench"}), args.repeat)
        suggest_s = timed(lambda i: client.get("/api/suggest", params={"target": "bench", "n": 20}), args.repeat)
        held.close()
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    rows = [("label one window", label_s), ("search by indexed-file id", search_s), ("train (linear)", train_s),
            ("score every window", score_s), ("suggest 20 (margin)", suggest_s),
            ("one Train & suggest round", train_s + score_s + suggest_s)]
    lines = [f"{args.windows:,} windows ({db_mib:.0f} MiB meta.duckdb, {args.index_type} FAISS index, built in "
             f"{build_s:.0f} s); median of "
             f"{args.repeat} calls each, client-side, through FastAPI's test client in one process; "
             f"load average {' '.join(load_before)} before, {' '.join(load_after)} after.", "",
             "| request | seconds | x search by id |", "|---|---|---|"]
    lines += [f"| {name} | {s:.3f} | {s / search_s:.1f} |" for name, s in rows]
    lines += ["", NOTE]
    text = "\n".join(lines)
    print(text)
    if args.doc:
        args.doc.write_text("# The serve page's labelling loop: cost per click\n\n"
                            "`python scripts/bench_serve_labels.py`\n\n" + text + "\n")


if __name__ == "__main__":
    main()
