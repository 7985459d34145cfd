"""Speed of each ``--precision`` against fp32 on this machine, interleaved in one run.

For each encoder (full-size random weights, as in ``bench_ingest.py``): FSDD files (one short
window each) and one synthetic file cut into the encoder's default windows, embedded at fp32,
bf16 and int8 in rotating order, best of ``--repeats``; prints one JSON line per encoder and
clip kind with x realtime (window audio seconds per wall second), speed against fp32, and each
mode's minimum cosine to fp32. This is what ``--precision auto``'s CPU rules
(``retrieval.encoders.precision.speed_order``) were checked against.

Usage: ``python scripts/bench_precision.py [--encoders beats,clap] [--files 16] [--long-s 40]
[--repeats 2] [--shared ../shared]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ingest as B  # noqa: E402
from _bench import write_full_clap  # noqa: E402

MODES = ("fp32", "bf16", "int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", default="beats,clap", help="comma-separated: wav2vec2, beats, clap")
    parser.add_argument("--files", type=int, default=16, help="FSDD files (short clips)")
    parser.add_argument("--long-s", type=float, default=40.0, help="length of the synthetic long file, seconds")
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode (best is kept)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    parser.add_argument("--shared", type=Path, default=B.SHARED, help="folder holding data/fsdd and golden/beats")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    B.FSDD = args.shared / "data" / "fsdd" / "recordings"
    B.BEATS_MANIFEST = args.shared / "golden" / "beats" / "weights_manifest_full.json"
    import torch

    from retrieval.configure import Choices, resolve
    from retrieval.embed import embed_windows

    torch.set_num_threads(args.threads)
    files = B.fsdd_files(args.files)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        work = Path(tmp)
        writers = {"wav2vec2": lambda: B.write_wav2vec2(work / "w2v"),
                   "beats": lambda: B.write_beats(work / "beats.pt"),
                   "clap": lambda: write_full_clap(work / "clap")}
        for name in args.encoders.split(","):
            checkpoint = writers[name]()
            loaded = {m: resolve(Choices(encoder=name, model=str(checkpoint), precision=m), None) for m in MODES}
            recipe = loaded["fp32"][1]
            sr, width, hop = recipe.sample_rate, recipe.window_samples, recipe.hop_samples
            t = np.arange(int(args.long_s * sr)) / sr
            long_audio = (0.3 * np.sin(2 * np.pi * 300 * t * (1 + t / args.long_s))
                          + 0.1 * rng.standard_normal(t.size)).astype(np.float32)
            kinds = {"short": B.decoded_windows(files, recipe),
                     "long": [long_audio[i:i + width] for i in range(0, long_audio.size - width + 1, hop)]}
            for kind, windows in kinds.items():
                seconds = sum(len(w) for w in windows) / sr
                for encoder, r in loaded.values():  # warm-up
                    embed_windows(encoder, windows[:2], r.pooling, 16)
                best = dict.fromkeys(MODES, float("inf"))
                vectors = {}
                for _ in range(args.repeats):
                    for mode, (encoder, r) in loaded.items():
                        start = time.perf_counter()
                        vectors[mode] = embed_windows(encoder, windows, r.pooling, 16)[0]
                        best[mode] = min(best[mode], time.perf_counter() - start)
                print(json.dumps({
                    "encoder": name, "clips": kind, "windows": len(windows), "audio_s": round(seconds, 1),
                    "threads": args.threads, "best_s": {m: round(v, 2) for m, v in best.items()},
                    "x_realtime": {m: round(seconds / v, 1) for m, v in best.items()},
                    "speed_vs_fp32": {m: round(best["fp32"] / v, 2) for m, v in best.items()},
                    "min_cos": {m: round(float(B._cosine(vectors[m], vectors["fp32"]).min()), 5) for m in MODES},
                }), flush=True)


if __name__ == "__main__":
    main()
