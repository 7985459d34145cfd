"""Write an evaluation as a markdown report with PNG plots.

``write_report`` writes into ``out_dir``:
    report.md          metrics, chance levels, per-class table, most-confused pairs
    per_class.png      precision / recall / F1 of every label, sorted by F1 (more than
                       :data:`LABELS_PER_PAGE` labels continue in per_class_2.png, ...)
    confusion.png      row-normalised confusion matrix
    embedding_map.png  2-D map of the vectors coloured by label (UMAP when umap-learn is
                       importable, else PCA)
    pr_curve.png       interpolated precision-recall curve of the ranking (with chance)
    per_class.csv      the per-class table; confusions.csv the off-diagonal pairs;
    predictions.csv    one row per query (written by :func:`retrieval.safecsv.write_csv`,
                       so label or path cells that look like formulas are neutralised)

Plots use matplotlib's Agg backend, so no display is needed. The per-class bars show
every label, split into pages; the figures grow with the number of labels. The
confusion matrix shows every label up to :data:`MAX_CONFUSION_LABELS`; beyond that it
keeps the labels with the most confusions, and both the plot and ``report.md`` name
what was left out. The embedding map draws a seeded sample of :data:`MAX_MAP_POINTS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retrieval.errors import InputError
from retrieval.evaluate import EvalResult
from retrieval.knn import check_vectors, split_label
from retrieval.safecsv import write_csv

#: Labels per page of the per-class plot (every label is shown, over several pages).
LABELS_PER_PAGE = 60
#: Labels in the confusion plot; past this the labels with the fewest confusions are left out (and named).
MAX_CONFUSION_LABELS = 80
#: Points drawn in the embedding map.
MAX_MAP_POINTS = 5000
#: Rows of the most-confused table in report.md.
TOP_CONFUSIONS = 15


def markdown_table(df: pd.DataFrame, digits: int = 3, index: bool = False) -> str:
    """A GitHub markdown table of ``df``; floats rounded to ``digits``, NaN shown as ``-``."""
    frame = df.reset_index() if index else df

    def cell(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "-" if not np.isfinite(v) else f"{v:.{digits}f}"
        return str(v).replace("|", "\\|")

    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def write_report(
    result: EvalResult,
    vectors: np.ndarray,
    labels: Sequence[Any],
    out_dir: Path,
    *,
    title: str = "Nearest-neighbour evaluation",
    seed: int = 0,
) -> Path:
    """Write ``report.md`` and its PNGs into ``out_dir`` (created if missing).

    Args:
        result: from :func:`retrieval.evaluate.evaluate`.
        vectors: ``(n, D)`` the vectors that were evaluated (for the embedding map).
        labels: ``n`` label cells, as given to ``evaluate`` (the map colours by the first label).
        out_dir: output folder.
        title: heading of the report.
        seed: seed of the map's point sample and of UMAP.

    Returns:
        The path of ``report.md``.

    Raises:
        InputError: ``vectors`` and ``labels`` lengths differ, or ``out_dir`` is a file.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    x = check_vectors(vectors, "vectors")
    if len(labels) != x.shape[0]:
        raise InputError(f"labels has {len(labels)} entries but there are {x.shape[0]} vectors")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"report folder {out} is a file; pass a folder path")
    out.mkdir(parents=True, exist_ok=True)

    for stale in out.glob("per_class_*.png"):  # pages of an earlier, larger report
        stale.unlink()
    shown, left_out = confusion_labels(result)
    images = {
        **_plot_per_class(result, out),
        "confusion.png": _plot_confusion(result, shown, left_out, out / "confusion.png"),
        "embedding_map.png": _plot_map(x, labels, out / "embedding_map.png", seed),
        "pr_curve.png": _plot_pr(result, out / "pr_curve.png"),
    }
    write_csv(result.per_class, out / "per_class.csv")
    write_csv(result.confusions, out / "confusions.csv")
    write_csv(result.predictions, out / "predictions.csv", index=True)
    path = out / "report.md"
    path.write_text(_markdown(result, title, images, left_out), encoding="utf-8")
    return path


def _markdown(result: EvalResult, title: str, images: dict[str, str | None], left_out: Sequence[str] = ()) -> str:
    m = result.metrics
    ks = result.ks
    cov = result.coverage
    rows = []
    for k in ks:
        rows.append({"k": k, "knn_accuracy": m.get(f"knn_accuracy@{k}"), "precision": m.get(f"precision@{k}"),
                     "recall": m.get(f"recall@{k}"), "map": m.get(f"map@{k}"),
                     "queries (accuracy, precision)": _over(cov, f"precision@{k}"),
                     "queries (recall, map)": _over(cov, f"map@{k}")})
    by_k = pd.DataFrame(rows)
    summary = pd.DataFrame([{"metric": key, "value": float(val), "over": _over(cov, key),
                             "left out": str(cov.loc[key, "excluded"]) if key in cov.index else "",
                             "why": cov.loc[key, "why"] if key in cov.index else ""}
                            for key, val in m.items() if not key.startswith("n_")])
    settings = result.settings
    lines = [
        f"# {title}", "",
        f"{m['n_queries']} labelled queries ({m['n_items']} items), {m['n_classes']} labels"
        f"{', multi-label' if result.multi_label else ''}; leave-one-out with neighbours from the same file "
        f"excluded{' and from the same group excluded' if settings.get('grouped') else ''}; "
        f"{settings.get('weighting', 'similarity')}-weighted votes.", "",
        "## Metrics by k", "", markdown_table(by_k), "",
        "## Summary", "",
        markdown_table(summary, digits=4), "",
        f"Chance: majority-label accuracy {m['chance_accuracy']:.4f}, random-ranking precision "
        f"{m['chance_precision']:.4f}. Queries without any neighbour: {m['n_no_neighbours']}; "
        f"without a relevant neighbour: {m['n_no_relevant']}.", "",
        f"## Per class (vote at k = {result.per_class_k})", "",
        "Also in per_class.csv; confusions.csv and predictions.csv (one row per query) are beside it.", "",
        markdown_table(result.per_class), "",
        f"## Most confused pairs (k = {result.per_class_k})", "",
        markdown_table(result.confusions.head(TOP_CONFUSIONS)) if len(result.confusions) else "No confusions.", "",
        "## Plots", "",
    ]
    if left_out:
        lines += [f"The confusion plot shows {len(result.classes) - len(left_out)} of {len(result.classes)} labels "
                  f"(those with the most confusions); left out ({len(left_out)}, the table above has them all): "
                  + ", ".join(str(c).replace("|", "\\|") for c in left_out) + ".", ""]
    for name, caption in images.items():
        if caption is not None:
            lines += [f"![{caption}]({name})", ""]
    return "\n".join(lines)


def _over(cov: pd.DataFrame, metric: str) -> str:
    """``"27 of 30"``-style count of what ``metric`` averages, from ``EvalResult.coverage``."""
    if metric not in cov.index:
        return ""
    r = cov.loc[metric]
    total = int(r["averaged_over"]) + int(r["excluded"])
    return f"{int(r['averaged_over'])} of {total} {r['unit']}" if r["excluded"] else f"{int(r['averaged_over'])} {r['unit']}"


def per_class_order(result: EvalResult) -> pd.DataFrame:
    """The per-class table sorted for the bars: F1, then recall, then precision, highest first; ties by label."""
    return result.per_class.sort_values(["f1", "recall", "precision", "label"],
                                        ascending=[False, False, False, True], ignore_index=True)


def confusion_labels(result: EvalResult) -> tuple[list[str], list[str]]:
    """``(shown, left_out)`` labels of the confusion plot, each in the matrix's (sorted) order.

    Every label when there are at most :data:`MAX_CONFUSION_LABELS`; otherwise the labels
    most involved in confusions (off-diagonal counts as true plus as predicted), ties by
    support then label.
    """
    cm = result.confusion_matrix
    names = list(cm.index)
    if len(names) <= MAX_CONFUSION_LABELS:
        return names, []
    c = cm.to_numpy()
    off = c.sum(axis=0) + c.sum(axis=1) - 2 * np.diag(c)
    support = result.per_class.set_index("label").loc[names, "support"].to_numpy()
    rank = sorted(range(len(names)), key=lambda i: (-off[i], -support[i], str(names[i])))
    keep = set(rank[:MAX_CONFUSION_LABELS])
    return [n for i, n in enumerate(names) if i in keep], [n for i, n in enumerate(names) if i not in keep]


def _plot_per_class(result: EvalResult, out: Path) -> dict[str, str]:
    """Horizontal precision/recall/F1 bars of every label, best F1 on top, :data:`LABELS_PER_PAGE` a page.

    Returns:
        file name -> caption, one entry per page (``per_class.png``, ``per_class_2.png``, ...).
    """
    import matplotlib.pyplot as plt

    pc = per_class_order(result)
    total = len(pc)
    pages = max(1, -(-total // LABELS_PER_PAGE))
    images = {}
    for page in range(pages):
        part = pc.iloc[page * LABELS_PER_PAGE:(page + 1) * LABELS_PER_PAGE]
        n = len(part)
        fig, ax = plt.subplots(figsize=(8.0, 1.6 + 0.3 * max(n, 4)))
        pos = np.arange(n)
        for i, col in enumerate(("f1", "recall", "precision")):
            ax.barh(pos + (i - 1) * 0.27, part[col].fillna(0.0), height=0.27, label=col)
        ax.set_yticks(pos, [str(v) for v in part["label"]], fontsize=8)
        ax.set_ylim(n - 0.5, -0.5)  # best F1 at the top
        ax.set_xlim(0, 1)
        ax.set_xlabel("score")
        span = f"labels {page * LABELS_PER_PAGE + 1}-{page * LABELS_PER_PAGE + n} of {total}"
        ax.set_title(f"Per-class kNN label transfer (k = {result.per_class_k}), by F1; {span}", fontsize=10)
        ax.legend(loc="lower right", fontsize=8)  # same top-to-bottom order as each label's bars
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        name = "per_class.png" if page == 0 else f"per_class_{page + 1}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        images[name] = f"per-class F1, recall and precision, sorted by F1 ({span})"
    return images


def _plot_confusion(result: EvalResult, keep: list[str], left_out: list[str], path: Path) -> str:
    import matplotlib.pyplot as plt

    cm = result.confusion_matrix.loc[keep, keep].to_numpy(float)
    support = result.per_class.set_index("label").loc[keep, "support"].to_numpy(float)
    norm = cm / np.maximum(support, 1)[:, None]
    n = len(keep)
    size = max(4.0, 0.3 * n + 2.5)
    fontsize = 8 if n <= 40 else 7
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [str(c) for c in keep], rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), [str(c) for c in keep], fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 15:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true label")
    title = f"Confusions (k = {result.per_class_k}), all {n} labels"
    if left_out:
        title = (f"Confusions (k = {result.per_class_k}): {n} of {n + len(left_out)} labels, those most confused;\n"
                 f"{len(left_out)} left out (named in report.md)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    caption = "confusion matrix, rows normalised by support"
    return caption + (f" ({n} of {n + len(left_out)} labels)" if left_out else "")


def project_2d(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """``(n, 2)`` float64 map of ``(n, D)`` vectors and the method: UMAP when importable, else PCA."""
    from retrieval.postprocess import l2_normalize

    xn = l2_normalize(x).astype(np.float64)
    if xn.shape[0] >= 15:
        try:
            import umap  # type: ignore[import-not-found]

            emb = umap.UMAP(n_components=2, metric="cosine", random_state=seed).fit_transform(xn)
            return np.asarray(emb, np.float64), "UMAP"
        except ImportError:
            pass
    xc = xn - xn.mean(axis=0)
    if xc.shape[0] < 2:
        return np.zeros((xc.shape[0], 2)), "PCA"
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    proj = xc @ vt[:2].T
    if proj.shape[1] < 2:
        proj = np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))
    return proj, "PCA"


def _plot_map(x: np.ndarray, labels: Sequence[Any], path: Path, seed: int) -> str:
    import matplotlib.pyplot as plt

    first = np.array([(split_label(v) or ("(none)",))[0] for v in labels], dtype=object)
    idx = np.arange(x.shape[0])
    if idx.size > MAX_MAP_POINTS:
        idx = np.sort(np.random.default_rng(seed).choice(idx, MAX_MAP_POINTS, replace=False))
    xy, method = project_2d(x[idx], seed)
    lab = first[idx]
    names, counts = np.unique(lab.astype(str), return_counts=True)
    shown = list(names[np.argsort(-counts, kind="stable")][:20])
    fig, ax = plt.subplots(figsize=(7.5, 6))
    cmap = plt.get_cmap("tab20")
    other = ~np.isin(lab.astype(str), shown)
    if other.any():
        ax.scatter(xy[other, 0], xy[other, 1], s=4, c="lightgrey", label="other labels")
    for i, name in enumerate(shown):
        sel = lab.astype(str) == name
        ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=cmap(i % 20), label=name)
    ax.set_title(f"Embeddings ({method}, {idx.size} points)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"2-D {method} map of the embeddings, coloured by label"


def _plot_pr(result: EvalResult, path: Path) -> str | None:
    import matplotlib.pyplot as plt

    pr = result.pr_curve
    if pr["precision"].isna().all():
        return None
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(pr["recall"], pr["precision"], marker="o", ms=3, label="ranking")
    chance = result.metrics.get("chance_precision", float("nan"))
    if np.isfinite(chance):
        ax.axhline(chance, color="grey", ls="--", lw=1, label=f"chance ({chance:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("interpolated precision")
    ax.set_title(f"Precision-recall (map = {result.metrics.get('map', float('nan')):.3f})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "interpolated precision-recall curve, averaged over queries"
