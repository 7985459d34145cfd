"""What a snapshot publish and a FAISS checksum cost (issue 11, items 7 and 20).

    python scripts/bench_publish.py --fsdd ../shared/data/fsdd/recordings --windows 100000

For FSDD: a log-mel ingest, then a forced re-publish. For N windows: a synthetic store
written straight into DuckDB (``bench_search.synth_store``), then a forced re-publish, and
the checksum of its flat FAISS file. Prints the sizes and seconds; times are wall clock
on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def republish(ix: Path) -> None:
    from retrieval.store import Store
    from retrieval.store.vectors import file_checksum

    with Store.open(ix, writable=True) as store:
        t = time.perf_counter()
        store.sync_vectors()  # what the end of an ingest does; the publish after it links these files
        print(f"  FAISS sync {time.perf_counter() - t:.1f} s")
        times = []
        for _ in range(3):
            t = time.perf_counter()
            store.publish(sync=False)
            times.append(time.perf_counter() - t)
        db_mb = store.db.path.stat().st_size / 2**20
        faiss = store.faiss_path("window")
        t = time.perf_counter()
        file_checksum(faiss)
        check_s = time.perf_counter() - t
    print(f"  meta.duckdb {db_mb:.1f} MiB; publish (checkpoint + copy + links) {min(times):.3f} / "
          f"{max(times):.3f} s (best / worst of 3)")
    print(f"  windows.faiss {faiss.stat().st_size / 2**20:.1f} MiB; xxh3 checksum {check_s:.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fsdd", type=Path, help="FSDD recordings folder (skipped when absent)")
    ap.add_argument("--windows", type=int, default=100_000, help="windows in the synthetic store (0: skip)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_publish_"))
    try:
        if args.fsdd is not None and args.fsdd.is_dir():
            from retrieval.ingest import ingest

            t = time.perf_counter()
            ingest(args.fsdd, root / "fsdd")
            print(f"FSDD: ingest {time.perf_counter() - t:.1f} s")
            republish(root / "fsdd")
        if args.windows:
            from bench_search import synth_store

            from retrieval import synth
            from retrieval.configure import Choices, resolve
            from retrieval.embed import embed_clip

            encoder, recipe = resolve(Choices(encoder="logmel"), None)
            centres = np.concatenate([embed_clip(encoder, synth.demo_clip(label, i, recipe.sample_rate),
                                                 recipe.window_samples, recipe.hop_samples, recipe.pooling)[1]
                                      for label in synth.DEMO_CLASSES for i in range(10)]).astype(np.float32)
            t = time.perf_counter()
            synth_store(root / "big", {"encoder": "logmel"}, args.windows, 10, centres, seed=3)
            print(f"{args.windows} windows: store written in {time.perf_counter() - t:.1f} s")
            republish(root / "big")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
