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
    recipe): ``Adapter.score`` of 1M windows (reading the vectors from DuckDB, applying the
    post-processing, scoring, writing window scores and the files column), and one
    label-train-score-suggest round on 100k windows. The naive way: sklearn's
    ``predict_proba`` on the same matrix, timed in the same run.

    python scripts/bench_adapt.py [--data ../shared/data/fsdd] [--draws 3] [--skip-c]
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


def synth(root: Path, n_segments: int, seed: int) -> None:
    from bench_search import synth_store

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, 160)).astype(np.float32)
    synth_store(root, {"encoder": "logmel"}, n_segments, 200, centres, seed)


def part_c(work: Path, n_big: int, n_round: int) -> list[str]:
    from sklearn.linear_model import LogisticRegression

    lines = []
    root = work / "big"
    t0 = time.perf_counter()
    synth(root, n_big, 0)
    log(f"synthetic store of {n_big} windows in {time.perf_counter() - t0:.0f} s")
    with Index.open(root, writable=True) as idx:
        ad = idx.adapter()
        ids, x = ad.space()
        rng = np.random.default_rng(0)
        ad.label_windows(ids[rng.choice(len(ids), 20, replace=False)].tolist(), "bench", "positive")
        ad.label_windows(ids[rng.choice(len(ids), 20, replace=False)].tolist(), "bench", "negative")
        ad.train(["bench"])
    times = []
    for i in range(3):
        with Index.open(root, writable=True) as idx:
            ad = idx.adapter()
            t = time.perf_counter()
            ad.score(["bench"])
            times.append(time.perf_counter() - t)
            if i == 2:
                t = time.perf_counter()
                ad.score(["bench"])
                warm = time.perf_counter() - t
                _, xw = ad.space()
                model = LogisticRegression().fit(xw[:2000], rng.random(2000) < 0.5)
                t = time.perf_counter()
                model.predict_proba(xw)
                naive = time.perf_counter() - t
    lines.append(markdown_table(["step", "seconds"], [
        [f"re-score {n_big:,} windows from a fresh open (read vectors from DuckDB, post-process, score, "
         "write window scores and the files column), 3 runs", ", ".join(f"{t:.2f}" for t in times)],
        ["same, vectors already in memory (a second `score` on one Adapter)", f"{warm:.2f}"],
        ["naive: sklearn predict_proba on the in-memory matrix (no storage)", f"{naive:.2f}"]]))
    log(lines[-1])
    root = work / "round"
    synth(root, n_round, 1)
    with Index.open(root, writable=True) as idx:
        ad = idx.adapter()
        ids, _ = ad.space()
        rng = np.random.default_rng(1)
        ad.label_windows(ids[rng.choice(len(ids), 10, replace=False)].tolist(), "bench", "positive")
        ad.train(["bench"])
        ad.score(["bench"])
        rounds = []
        for _ in range(3):
            sug = ad.suggest(["bench"], 20)
            t = [time.perf_counter()]
            ad.label_windows(sug["segment_id"][:10].tolist(), "bench", "positive")
            ad.label_windows(sug["segment_id"][10:].tolist(), "bench", "negative")
            t.append(time.perf_counter())
            ad.train(["bench"])
            t.append(time.perf_counter())
            ad.score(["bench"])
            t.append(time.perf_counter())
            ad.suggest(["bench"], 20)
            t.append(time.perf_counter())
            rounds.append(np.diff(t))
    r = np.array(rounds)
    lines += ["", markdown_table(["round on " + f"{n_round:,} windows", "label 20", "train", "score", "suggest", "total"],
                                 [[f"round {i + 1}"] + [f"{v:.2f}" for v in row] + [f"{row.sum():.2f}"]
                                  for i, row in enumerate(r)])]
    log(lines[-1])
    return lines


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
    p.add_argument("--out", type=Path, default=OUT, help="the report to write")
    args = p.parse_args()
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
            body += ["## Re-scoring and one loop round at scale (synthetic stores)", "",
                     *part_c(work, args.n_big, args.n_round), ""]
    body.append(f"Load average at the end: {os.getloadavg()[0]:.1f}.")
    args.out.write_text("\n".join(head + body) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
