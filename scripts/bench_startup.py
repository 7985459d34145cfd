"""Cold start of the CLI: `retrieve --help`, `retrieve info` and a log-mel `retrieve query`,
each against a bare `python -c pass` in the same run (issue 16 item 9).

Each command runs ``--repeats`` times in a fresh interpreter, interleaved with the bare
interpreter, and the table gives the median wall time, the median minus the bare
interpreter's (what the command itself costs) and the median CPU time (user + system) of
the process, which a busy machine inflates less than wall time. The index is FSDD (or the
synthetic demo corpus) indexed with the defaults, as ``scripts/demo.sh`` does. The package
is byte-compiled first, as an install is; ``info`` answers from the summary its writer
left (``info.json``), and ``info --verify`` (a full open) is timed beside it.

    python scripts/bench_startup.py            # writes docs/bench_startup.md
    python scripts/bench_startup.py --before /tmp/old   # also an older tree (git archive REV | tar -x -C /tmp/old)
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bench_startup.md"
FSDD = REPO.parent / "shared" / "data" / "fsdd"
TARGETS_S = {"retrieve --help": 0.3, "retrieve info": 0.3, "retrieve query (logmel)": 0.6}


def wall(cmd: list[str], tree: Path | None = None) -> tuple[float, float]:
    """``(wall s, CPU s)`` of one run of ``cmd``, with ``retrieval`` imported from ``tree`` (default: this one)."""
    # A user's install has bytecode (pip compiles at install, Python caches on first import);
    # an environment that forbids writing it would time the compiler instead of the start.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(tree or REPO)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tree or REPO, env=env)
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=15, help="runs of each command")
    p.add_argument("--fsdd", type=Path, default=FSDD, help="FSDD folder (with recordings/); else the demo corpus")
    p.add_argument("--before", type=Path, help="an older source tree whose retrieve commands run interleaved, "
                                               "as '(before)' rows: the change, under the same load")
    args = p.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        ix = Path(tmp) / "ix"
        if (args.fsdd / "recordings").is_dir():
            corpus, clip = args.fsdd / "recordings", args.fsdd / "recordings" / "7_jackson_32.wav"
        else:
            from retrieval.synth import write_demo_corpus

            corpus = Path(tmp) / "corpus"
            clip = write_demo_corpus(corpus, per_class=20)[0]
        subprocess.run([sys.executable, "-m", "retrieval", "index", str(corpus), "--index", str(ix)], check=True,
                       stdout=subprocess.DEVNULL, cwd=REPO)
        retrieve = [sys.executable, "-m", "retrieval"]
        cmds = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "retrieve --help": [*retrieve, "--help"],
            "retrieve info": [*retrieve, "info", "--index", str(ix)],
            "retrieve info --verify": [*retrieve, "info", "--verify", "--index", str(ix)],
            "retrieve query (logmel)": [*retrieve, "query", str(clip), "--index", str(ix), "-k", "5"],
        }
        runs: dict[str, tuple[list[str], Path | None]] = {name: (cmd, None) for name, cmd in cmds.items()}
        if args.before is not None:
            runs.update({f"{name} (before)": (cmd, args.before.resolve()) for name, cmd in cmds.items()
                         if name.startswith("retrieve")})
        for tree in {tree for _, tree in runs.values()}:
            subprocess.run([sys.executable, "-m", "compileall", "-q", str((tree or REPO) / "retrieval")], check=True)
        for cmd, tree in runs.values():  # warm the page cache once
            wall(cmd, tree)
        times: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, (cmd, tree) in runs.items():
                w, c = wall(cmd, tree)
                times[name].append(w)
                cpu[name].append(c)
    bare = statistics.median(times["python -c pass"])
    rows = ["| command | median wall s | minus bare python s | median CPU s | target s (wall) | met |",
            "|---|---:|---:|---:|---:|---|"]
    for name, ts in times.items():
        med = statistics.median(ts)
        target = TARGETS_S.get(name)
        met = "" if target is None else ("yes" if med <= target else "**no**")
        rows.append(f"| `{name}` | {med:.3f} | {med - bare:.3f} | {statistics.median(cpu[name]):.3f} | "
                    f"{'' if target is None else target} | {met} |")
    text = "\n".join([
        "# Cold start of the CLI", "",
        f"Generated by `python scripts/bench_startup.py --repeats {args.repeats}`; load average "
        f"{load:.1f} at start, {os.getloadavg()[0]:.1f} at end"
        + (f"; '(before)' rows run `{args.before}`" if args.before else "") + ".", "",
        *__doc__.split("\n\n")[1].splitlines(), "",
        *rows, "",
    ])
    print(text)
    DOC.write_text(text)


if __name__ == "__main__":
    main()
