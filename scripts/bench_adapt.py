"""Adaptation on FSDD and at scale: few-shot curves, a simulated active-learning loop, re-score and round times.

(a) Few-shot curve (``Index.few_shot``, what ``retrieve eval --few-shot`` prints) on the
    default baseline index of FSDD (logmel, 3,000 files, one window each), ``digit`` with
    every speaker held out in turn (6 folds) and ``--draws`` support draws per fold.
(b) Simulated active learning on the same vectors. Per replicate (held-out speaker x seed):
    the pool is the other five speakers (2,500 files), the test set the held-out one. It
    starts from 2 positives per class; each round fits one head per digit (one-vs-rest,
    :func:`retrieval.heads.fit_head` on the labelled items; the oracle's label of an item
    makes it a positive of its digit and a negative of the other nine), scores the pool,
    and labels the next 20 by :func:`retrieval.adapt.pick_windows` (margin with its diversity
    step, the `retrieve suggest` default; margin without it; or random).
    The test macro ROC-AUC is compared with the head trained on every pool label.
(c) Timings on synthetic stores (vectors written straight into DuckDB, logmel's 160-d
    recipe): ``Adapter.score`` of 1M windows from a fresh process, first open (it builds the
    mapped search-vector copy) and later opens (they map it); and label-train-score-suggest
    rounds on 100k windows, each step a fresh ``Index.open`` as each ``retrieve`` command
    does. The naive way, timed in the same run: every raw vector out of DuckDB into numpy,
    sklearn ``LogisticRegression`` on the labels and ``predict_proba`` of all.

    python scripts/bench_adapt.py [--data ../shared/data/fsdd] [--draws 3] [--skip-c]
    python scripts/bench_adapt.py --sections scale    # (c) only, into the existing report
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from retrieval.adapt import MARGIN_POOL, pick_windows  # noqa: E402
from retrieval.fewshot import _ci, metrics  # noqa: E402
from retrieval.heads import fit_head  # noqa: E402
from retrieval.index import Index  # noqa: E402

OUT = REPO / "docs" / "bench_adapt.md"
SHOTS = (1, 2, 4, 8, 16, 32)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def log(msg: str) -> None:
    print(msg, flush=True)


def fsdd_index(data: Path, work: Path, given: str | None) -> Index:
    if given:
        return Index.open(given)
    t0 = time.perf_counter()
    idx = Index.build(data / "recordings", work / "fsdd", labels_csv=data / "labels.csv")
    log(f"built the FSDD index in {time.perf_counter() - t0:.0f} s")
    return idx


# -- (a) ---------------------------------------------------------------------------------------


def part_a(idx: Index, draws: int) -> tuple[list[str], str]:
    t0 = time.perf_counter()
    fs = idx.few_shot("digit", "speaker", SHOTS, draws=draws)
    wide = fs.table.pivot_table(index=["shots", "method"], columns="metric", values=["mean", "ci_low", "ci_high"])
    rows = []
    for (n, method), r in wide.iterrows():
        rows.append([str(n), method] + [f"{r[('mean', m)]:.3f} [{r[('ci_low', m)]:.3f}, {r[('ci_high', m)]:.3f}]"
                                        for m in ("macro_roc_auc", "cmap", "top1")])
    table = markdown_table(["n / class", "method", "macro ROC-AUC", "cmAP", "top-1"], rows)
    d = fs.diffs[fs.diffs.metric == "macro_roc_auc"]
    diff_rows = [[str(r.shots), f"head - {r.other}", f"{r.mean:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]"]
                 for r in d.sort_values(["other", "shots"]).itertuples()]
    diffs = markdown_table(["n / class", "paired difference", "macro ROC-AUC (95% CI)"], diff_rows)
    verdict = fs.verdict()
    log(table + "\n\n" + diffs + "\n\n" + verdict + f"\n({time.perf_counter() - t0:.0f} s)")
    return [table, "", "Paired differences (same fold, draw and support set):", "", diffs, "", f"**Verdict:** {verdict}."], verdict


# -- (b) ---------------------------------------------------------------------------------------


def heads_scores(x_lab: np.ndarray, y_lab: np.ndarray, x: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n, C)`` probabilities of one-vs-rest heads fitted on the labelled items."""
    out = np.zeros((len(x), n_classes), np.float32)
    for c in range(n_classes):
        out[:, c] = fit_head(x_lab, y_lab == c).scores(x)
    return out


#: Strategies of the loop: (name, pick_windows strategy, margin_pool). ``margin`` is what
#: ``retrieve suggest`` does by default; ``margin_plain`` the same without the diversity step.
STRATEGY_RUNS = (("margin", "margin", MARGIN_POOL), ("margin_plain", "margin", 1), ("random", "random", 1))


def simulate(x: np.ndarray, y: np.ndarray, pool: np.ndarray, test: np.ndarray, strategy: str, seed: int,
             budget: int, step: int, n_classes: int, margin_pool: int = MARGIN_POOL) -> list[tuple[int, float]]:
    """One simulated loop: ``[(labels, test macro ROC-AUC)]`` per round, from 2 positives per class."""
    rng = np.random.default_rng(seed)
    labelled = np.concatenate([rng.permutation(pool[y[pool] == c])[:2] for c in range(n_classes)])
    curve = []
    while True:
        s_all = heads_scores(x[labelled], y[labelled], np.concatenate([x[pool], x[test]]), n_classes)
        s_pool, s_test = s_all[:len(pool)], s_all[len(pool):]
        curve.append((len(labelled), metrics(s_test, y[test], n_classes)["macro_roc_auc"]))
        if len(labelled) >= budget:
            return curve
        free = np.flatnonzero(~np.isin(pool, labelled))
        pick = pick_windows(s_pool, free, step, strategy, seed=int(rng.integers(1 << 31)),  # type: ignore[arg-type]
                            vectors=x[pool], margin_pool=margin_pool)
        labelled = np.concatenate([labelled, pool[pick]])


def _fmt(m: float, lo: float, hi: float, sign: str = "") -> str:
    return f"{m:{sign}.4f} [{lo:{sign}.4f}, {hi:{sign}.4f}]"


def part_b(idx: Index, seeds: int, budget_share: float, step: int, n_speakers: int,
           first_seed: int = 0) -> list[str]:
    t0 = time.perf_counter()
    meta, x = idx.embeddings("file")
    names = sorted(meta["digit"].astype(str).unique())
    y = np.array([names.index(v) for v in meta["digit"].astype(str)])
    speakers = meta["speaker"].astype(str).to_numpy()
    reps = []
    for sp in sorted(set(speakers))[:n_speakers]:
        pool, test = np.flatnonzero(speakers != sp), np.flatnonzero(speakers == sp)
        full = heads_scores(x[pool], y[pool], x[test], len(names))
        ref = metrics(full, y[test], len(names))["macro_roc_auc"]
        budget = int(np.ceil(budget_share * len(pool)))
        for seed in range(first_seed, first_seed + seeds):
            for name, strategy, margin_pool in STRATEGY_RUNS:
                for n, auc in simulate(x, y, pool, test, strategy, seed, budget, step, len(names), margin_pool):
                    reps.append({"speaker": sp, "seed": seed, "strategy": name, "labels": n, "auc": auc,
                                 "ref": ref, "pool": len(pool)})
        log(f"  held out {sp}: all-labels head macro ROC-AUC {ref:.4f} ({time.perf_counter() - t0:.0f} s)")
    df = pd.DataFrame(reps)
    df["share_of_ref"] = df["auc"] / df["ref"]
    wide = df.pivot_table(index=["speaker", "seed", "labels"], columns="strategy", values="share_of_ref")
    rows = []
    for n, w in wide.groupby(level="labels"):
        rows.append([str(n), f"{100 * n / df['pool'].iloc[0]:.1f}%"]
                    + [_fmt(*_ci(w[s].to_numpy())) for s in ("margin", "margin_plain", "random")]
                    + [_fmt(*_ci((w["margin"] - w[o]).to_numpy()), "+") for o in ("random", "margin_plain")])
    table = markdown_table(["labels", "% of pool", "margin (default)", "margin_plain", "random",
                            "margin - random (paired)", "margin - margin_plain (paired)"], rows)
    # area under the learning curve: the mean share over every round after the common start
    alc = wide[wide.index.get_level_values("labels") > wide.index.get_level_values("labels").min()]
    alc = alc.groupby(level=["speaker", "seed"]).mean()
    alc_rows = [[f"{a} - {b}", _fmt(*_ci((alc[a] - alc[b]).to_numpy()), "+")]
                for a, b in (("margin", "random"), ("margin", "margin_plain"), ("margin_plain", "random"))]
    alc_table = markdown_table(["paired difference", "mean share of the all-labels AUC over rounds 2-last (95% CI)"],
                               alc_rows)
    reach = []
    for name, _, _ in STRATEGY_RUNS:
        firsts = []
        for _, g in df[df.strategy == name].groupby(["speaker", "seed"]):
            hit = g[g["share_of_ref"] >= 0.95]
            firsts.append(hit["labels"].min() / g["pool"].iloc[0] if len(hit) else np.nan)
        arr = np.array(firsts)
        ok = ~np.isnan(arr)
        reach.append(f"{name}: {ok.sum()} of {len(arr)} replicates reach 95% of the all-labels head's macro "
                     f"ROC-AUC within {100 * budget_share:.0f}% of the pool's labels"
                     + (f", at {100 * np.nanmean(arr):.1f}% of the labels on average (range "
                        f"{100 * np.nanmin(arr):.1f}-{100 * np.nanmax(arr):.1f}%)" if ok.any() else ""))
    refs = df.groupby("speaker")["ref"].first()
    log(table + "\n\n" + alc_table + "\n" + "\n".join(reach) + f"\n({time.perf_counter() - t0:.0f} s)")
    return [f"All-labels head (2,500 pool labels), test macro ROC-AUC by held-out speaker: "
            + ", ".join(f"{k} {v:.4f}" for k, v in refs.items()) + ".", "",
            f"{len(alc)} replicates ({df['speaker'].nunique()} held-out speakers, "
            f"{', '.join(sorted(df['speaker'].unique()))}, x seeds {first_seed}-{first_seed + seeds - 1}), "
            f"every strategy on the same replicates; mean with 95% t interval. Ran in {time.perf_counter() - t0:.0f} s.", "",
            table, "", "Area under the learning curve (the start, 20 labels, is common to all and left out):", "",
            alc_table, "", *[f"- {line}" for line in reach]]


# -- (c) ---------------------------------------------------------------------------------------

#: The heading of the section part (c) writes, and older headings of the same figures it replaces.
SCALE_TITLE = "## Re-scoring and one loop round at scale (synthetic stores)"
SCALE_OLD = ("## Re-scoring at scale", "## One label-train-score-suggest round on")


def synth(root: Path, n_windows: int, seed: int) -> None:
    """A synthetic logmel-recipe store of ``n_windows`` windows (:func:`bench_search.synth_store`)."""
    from bench_search import synth_store

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, 160)).astype(np.float32)
    synth_store(root, {"encoder": "logmel"}, n_windows, 200, centres, seed)


def drop_copy(root: Path) -> None:
    """Delete the derived search-vector copy (:mod:`retrieval.store.vector_file`), so the next open rebuilds it."""
    for f in root.glob("windows.search.*"):
        f.unlink()


def rescore_worker(root: str) -> None:
    """What ``retrieve score --target bench`` does, timed from inside a fresh process; prints JSON."""
    import json

    t0 = time.perf_counter()
    with Index.open(root, writable=True) as idx:
        ad = idx.adapter()
        t1 = time.perf_counter()
        ad.score(["bench"])
        t2 = time.perf_counter()
    print(json.dumps({"open": t1 - t0, "score": t2 - t1, "total": time.perf_counter() - t0}))


def fresh_rescore(root: Path) -> dict[str, float]:
    """Run :func:`rescore_worker` in a new interpreter; adds ``process`` (its wall seconds, with imports)."""
    import json
    import subprocess

    t = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--rescore-worker", str(root)], check=True,
                         capture_output=True, text=True).stdout
    found = json.loads(out.strip().splitlines()[-1])
    found["process"] = time.perf_counter() - t
    return found


def naive_round(root: Path, labelled: np.ndarray, y: np.ndarray, n: int) -> tuple[float, np.ndarray]:
    """The by-hand way: every raw vector out of DuckDB into numpy, sklearn ``LogisticRegression`` on
    the labelled rows (``labelled`` window ids, ``y`` bool), ``predict_proba`` of all, the ``n``
    smallest ``|p - 0.5|``. Returns (seconds, picked ids); no whitening, nothing stored."""
    from sklearn.linear_model import LogisticRegression

    t = time.perf_counter()
    with Index.open(root) as idx:
        ids, x = idx.store.db.vectors("window", idx.store.require_recipe().dim)
    rows = np.searchsorted(ids, labelled)
    p = LogisticRegression(max_iter=1000).fit(x[rows], y).predict_proba(x)[:, 1]
    pick = ids[np.argsort(np.abs(p - 0.5), kind="stable")[:n]]
    return time.perf_counter() - t, pick


def part_c(work: Path, n_big: int, n_round: int) -> list[str]:
    lines = []
    loads = [open("/proc/loadavg").read().split()[:3]]
    # -- re-score n_big windows from a fresh process ------------------------------------------
    root = work / "big"
    t0 = time.perf_counter()
    synth(root, n_big, 0)
    build_s = time.perf_counter() - t0
    log(f"synthetic store of {n_big} windows in {build_s:.0f} s")
    rng = np.random.default_rng(0)
    with Index.open(root, writable=True) as idx:
        ad = idx.adapter()
        ids, _ = ad.space()
        chosen = rng.choice(ids, 40, replace=False)
        ad.label_windows(chosen[:20].tolist(), "bench", "positive")
        ad.label_windows(chosen[20:].tolist(), "bench", "negative")
        ad.train(["bench"])
    drop_copy(root)
    first = fresh_rescore(root)
    log(f"first open: {first}")
    second = [fresh_rescore(root) for _ in range(2)]
    log(f"later opens: {second}")
    naive_big, _ = naive_round(root, chosen, np.arange(40) < 20, 20)
    log(f"naive (DuckDB -> numpy -> sklearn fit + predict_proba): {naive_big:.2f} s")
    loads.append(open("/proc/loadavg").read().split()[:3])
    best2 = min(r["total"] for r in second)

    def row(name: str, r: dict[str, float]) -> list[str]:
        return [name, f"{r['open']:.2f}", f"{r['score']:.2f}", f"{r['total']:.2f}", f"{r['process']:.2f}"]

    lines += [f"**Re-score {n_big:,} windows from a fresh process** (`retrieve score` as a new interpreter: "
              "`Index.open(writable=True).adapter().score([target])`, timed inside it; head trained on 20 positive "
              "and 20 negative windows). The first open after the copy is deleted rebuilds the mapped search-vector "
              "copy (`retrieval/store/vector_file.py`: read from DuckDB, whiten, write); later opens map it. "
              f"Store written straight into DuckDB in {build_s:.0f} s (logmel's 160-d recipe, no audio).", "",
              markdown_table(["run", "open (s)", "score (s)", "open + score + close (s)", "process wall, with imports (s)"],
                             [row("first open (builds the copy)", first)]
                             + [row(f"later open {i + 1}", r) for i, r in enumerate(second)]
                             + [["naive: all raw vectors DuckDB -> numpy, sklearn fit on the 40 labels + "
                                 "predict_proba of all (no whitening, nothing stored)", "", "", f"{naive_big:.2f}", ""]]),
              "", f"Later open / naive: {best2 / naive_big:.2f}x (the fastest later open's open + score + close over the "
              "naive way's seconds, same run).", ""]
    log(lines[-3])
    shutil_rmtree(root)
    # -- one round on n_round windows ------------------------------------------------------------
    root = work / "round"
    synth(root, n_round, 1)
    rng = np.random.default_rng(1)
    with Index.open(root, writable=True) as idx:
        ids, _ = idx.adapter().space()  # builds the copy once, as the first command on an index would
    start = rng.choice(ids, 40, replace=False)
    rounds, naive_s = [], []
    batch = (start[:20], start[20:])
    for _ in range(3):
        t = [time.perf_counter()]
        with Index.open(root, writable=True) as idx:       # retrieve label
            ad = idx.adapter()
            ad.label_windows(batch[0].tolist(), "bench", "positive")
            ad.label_windows(batch[1].tolist(), "bench", "negative")
        t.append(time.perf_counter())
        with Index.open(root, writable=True) as idx:       # retrieve train
            idx.adapter().train(["bench"])
        t.append(time.perf_counter())
        with Index.open(root, writable=True) as idx:       # retrieve score
            idx.adapter().score(["bench"])
        t.append(time.perf_counter())
        with Index.open(root) as idx:                      # retrieve suggest
            sug = idx.adapter().suggest(["bench"], 20)["window_id"].to_numpy(np.int64)
        t.append(time.perf_counter())
        rounds.append(np.diff(t))
        with Index.open(root) as idx:
            spans = idx.adapter().labels_db.window_labels(["bench"])
        naive_s.append(naive_round(root, spans["window_id"].to_numpy(np.int64),
                                   (spans["label"] == "positive").to_numpy(), 20)[0])
        batch = (sug[:10], sug[10:])
    loads.append(open("/proc/loadavg").read().split()[:3])
    r = np.array(rounds)
    n_labels = [40 + 20 * i for i in range(len(r))]
    lines += [f"**One round on {n_round:,} windows**, each step a fresh `Index.open` the way each `retrieve` "
              "command opens the index (interpreter start and imports not included; the copy already built): "
              "label a batch (round 1: 20 positive + 20 negative random windows; then the 20 suggested, 10 "
              "positive and 10 negative), train (logistic, up to 20,000 weak negatives of weight 0.1), score every "
              "window (window scores + files column), suggest 20 (margin with the diversity step). Naive: all raw "
              "vectors DuckDB -> numpy, sklearn `LogisticRegression` on the labels only + `predict_proba` + the 20 "
              "smallest |p - 0.5|, same labels, same run.", "",
              markdown_table([f"round on {n_round:,} windows", "labels", "label", "train", "score", "suggest",
                              "total", "naive", "total / naive"],
                             [[f"round {i + 1}", str(n_labels[i])] + [f"{v:.2f}" for v in row_]
                              + [f"{row_.sum():.2f}", f"{naive_s[i]:.2f}", f"{row_.sum() / naive_s[i]:.2f}x"]
                              for i, row_ in enumerate(r)]), "",
              "`/proc/loadavg` (1 / 5 / 15 min) at the start, after the re-scoring and at the end: "
              + "; ".join(" / ".join(x) for x in loads) + f" on {os.cpu_count()} cores (shared with other work).", ""]
    log("\n".join(lines[-4:]))
    return lines


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def splice(old: str, new_sections: list[str], drop: tuple[str, ...]) -> str:
    """``old`` (a report) with its ``## `` sections whose heading starts with one of ``drop`` removed
    and ``new_sections`` (lines, starting with their heading) put where the first of them was
    (at the end when none was there). Other sections and the preamble are kept as they are."""
    out: list[str] = []
    at: int | None = None
    skipping = fence = False
    for line in old.rstrip("\n").splitlines():
        fence ^= line.startswith("```")
        if line.startswith("## ") and not fence:
            skipping = line.startswith(drop)
            if skipping and at is None:
                at = len(out)
        if not skipping:
            out.append(line)
    while out and out[-1].startswith("Load average at the end"):
        out.pop()
    if at is None:
        at = len(out)
        new_sections = [""] + new_sections
    return "\n".join(out[:at] + new_sections + out[at:]) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fsdd")
    p.add_argument("--index", help="an existing FSDD index (logmel default, labels.csv attached)")
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--seeds", type=int, default=2, help="active-learning seeds per held-out speaker")
    p.add_argument("--first-seed", type=int, default=0,
                   help="first active-learning seed (fresh seeds check a strategy chosen on earlier ones)")
    p.add_argument("--speakers", type=int, default=6, help="held-out speakers in the active-learning loop")
    p.add_argument("--budget", type=float, default=0.12, help="share of the pool the loop may label")
    p.add_argument("--step", type=int, default=20)
    p.add_argument("--n-big", type=int, default=1_000_000)
    p.add_argument("--n-round", type=int, default=100_000)
    p.add_argument("--skip-a", action="store_true")
    p.add_argument("--skip-b", action="store_true")
    p.add_argument("--skip-c", action="store_true")
    p.add_argument("--sections", choices=["all", "scale"], default="all",
                   help="scale: only part (c), spliced into the existing report in place of its old "
                        "re-scoring sections (the others are kept)")
    p.add_argument("--out", type=Path, default=OUT, help="the report to write")
    p.add_argument("--rescore-worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rescore_worker:
        rescore_worker(args.rescore_worker)
        return
    if args.sections == "scale":
        with tempfile.TemporaryDirectory() as tmp:
            section = [SCALE_TITLE, "", f"`python scripts/bench_adapt.py --sections scale` (`--n-big {args.n_big} "
                       f"--n-round {args.n_round}`).", "", *part_c(Path(tmp), args.n_big, args.n_round)]
        old = args.out.read_text() if args.out.exists() else ""
        args.out.write_text(splice(old, section, (SCALE_TITLE,) + SCALE_OLD))
        log(f"wrote {args.out}")
        return
    load0 = os.getloadavg()[0]
    head = [f"# Adaptation: few-shot heads, active learning, re-scoring\n",
            f"`python scripts/bench_adapt.py` on {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
            f"load average {load0:.1f} at the start (the machine is shared).", ""]
    body: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not (args.skip_a and args.skip_b):
            idx = fsdd_index(args.data, work, args.index)
            if not args.skip_a:
                part, _ = part_a(idx, args.draws)
                body += ["## Few-shot curve on FSDD (digit, speaker held out)", "",
                         f"6 folds (one held-out speaker each) x {args.draws} support draws; head = logistic "
                         "one-vs-rest on the labelled support only; head_weak = the same plus every other "
                         "training-pool file as a weak negative of weight 0.1 (the `retrieve train` default); "
                         "kNN = similarity-weighted vote of the 5 nearest support files.", "", *part, ""]
            if not args.skip_b:
                body += ["## Simulated active learning on FSDD", "",
                         "Oracle = the real digit labels. Start: 2 positives per digit (20 labels); +20 labels "
                         "per round, picked by `retrieval.adapt.pick_windows`: margin (the `retrieve suggest` "
                         "default: the 100 files of smallest min over digits of |p - 0.5|, then 20 of them "
                         "spread out by farthest-point selection on the search vectors), margin_plain (the "
                         "20 smallest margins) or at random; one-vs-rest logistic heads on the labelled files "
                         "only. Scores are a share of the all-labels head's test macro ROC-AUC.", "",
                         *part_b(idx, args.seeds, args.budget, args.step, args.speakers, args.first_seed), ""]
            idx.close()
        if not args.skip_c:
            body += [SCALE_TITLE, "",
                     *part_c(work, args.n_big, args.n_round), ""]
    body.append(f"Load average at the end: {os.getloadavg()[0]:.1f}.")
    args.out.write_text("\n".join(head + body) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
