"""Write notebooks/knn_label_transfer.ipynb from the cells below (kept as code so diffs stay readable).

Run: python scripts/make_notebook.py [--execute]
(--execute stores the outputs, so the plots show without running it; the test suite runs it
again from scratch with nbclient either way.)
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell("""# Does a frozen encoder already solve my task? kNN label transfer with `retrieve`

Our users climb a ladder: **(1)** a spectral baseline that needs no weights, **(2)** a frozen
pretrained encoder (wav2vec2, BEATs, CLAP), **(3)** fine-tuning. Each rung costs more. This
notebook shows how to decide, with evidence on your own labelled data, whether to climb.

It indexes a labelled corpus (the Free Spoken Digit Dataset when `../shared/data/fsdd` is
beside the project, otherwise a generated corpus of synthetic sound classes), measures
nearest-neighbour quality with **leakage-aware** leave-one-out (neighbours from the same
speaker never vote), transfers labels to a speaker the index has never heard, and compares
two settings with a bootstrap confidence interval."""),
    new_code_cell("""import os, tempfile
from pathlib import Path

import pandas as pd
from IPython.display import Image, Markdown, display

from retrieval import Index
from retrieval.compare import compare
from retrieval.report import write_report
from retrieval.synth import write_demo_corpus

work = Path(tempfile.mkdtemp(prefix="knn_notebook_"))
# ../shared sits beside the project; the notebook may run from notebooks/ or from the project root
here = Path.cwd().resolve()
fsdd = next((p / "shared" / "data" / "fsdd" for p in (here.parent, here.parent.parent)
             if (p / "shared" / "data" / "fsdd").is_dir()), here / "no-fsdd")
if (fsdd / "recordings").is_dir():
    # every 3rd take keeps the notebook quick: 1,000 recordings, 6 speakers x 10 digits
    corpus = work / "fsdd"
    corpus.mkdir()
    labels = pd.read_csv(fsdd / "labels.csv")
    labels = labels[labels["take"] % 3 == 0]
    for f in labels.file:
        os.symlink(fsdd / "recordings" / f, corpus / f)
    labels.to_csv(work / "labels.csv", index=False)
    label_column, group_column, held_out = "digit", "speaker", "theo"
else:
    corpus = work / "demo"
    write_demo_corpus(corpus, per_class=30)
    rows = [{"file": p.relative_to(corpus).as_posix(), "source": f"s{int(p.stem.split('_')[1]) % 5}"}
            for p in sorted(corpus.rglob("*.wav"))]
    pd.DataFrame(rows).to_csv(work / "labels.csv", index=False)
    label_column, group_column, held_out = "label", "source", "s0"
print(corpus, len(list(corpus.iterdir())), "entries")"""),
    new_markdown_cell("## Rung 1: index with the spectral baseline\n\n"
                      "Two indexes of the same corpus: the naive mean-pooled log-mel, and the default baseline "
                      "(trimmed MFCC frames, temporal pyramid pooling, PCA-whitening fitted on the corpus)."),
    new_code_cell("""naive = Index.build(corpus, work / "naive", labels_csv=work / "labels.csv",
                    extra={"feature": "logmel", "trim_db": None}, pooling="mean", postprocess="none")
default = Index.build(corpus, work / "default", labels_csv=work / "labels.csv", postprocess="whiten")
s = default.last_ingest
print(f"default baseline: {s.files_indexed} files in {s.seconds:.1f} s ({s.realtime_factor:.0f}x realtime)")
naive.close(); default.close()"""),
    new_markdown_cell("## Leakage-aware nearest-neighbour quality"),
    new_code_cell("""results = {}
for name in ("naive", "default"):
    with Index.open(work / name) as idx:
        results[name] = idx.evaluate(label_column, group_column, ks=(1, 5, 10))
table = pd.DataFrame({k: r.metrics for k, r in results.items()}).T
table[["knn_accuracy@1", "knn_accuracy@5", "precision@5", "map@10", "chance_accuracy"]].round(3)"""),
    new_code_cell("""cmp = compare(results, "knn_accuracy@1", groups=results["naive"].predictions["group"].tolist(), n_resamples=500)
print(cmp.summary())"""),
    new_markdown_cell("## Transfer labels to an unseen speaker\n\n"
                      "The held-out speaker's recordings are labelled only by neighbours from *other* speakers."),
    new_code_cell("""with Index.open(work / "default") as idx:
    files = idx.files()
    clips = [corpus / p for p in files.loc[files[group_column] == held_out, "path"]]
    preds = idx.classify(clips, k=10, label_column=label_column, where=f"{group_column} != '{held_out}'")
truth = files.set_index("path").loc[[c.name if c.parent == corpus else c.relative_to(corpus).as_posix() for c in clips],
                                    label_column].astype(str).to_numpy()
accuracy = (preds.predicted.astype(str).to_numpy() == truth).mean()
print(f"{len(clips)} clips of {held_out!r}: label-transfer accuracy {accuracy:.3f}")
preds[["clip", "predicted", "confidence"]].head()"""),
    new_markdown_cell("## Plots: per-class quality, confusions, the embedding map, precision-recall"),
    new_code_cell("""with Index.open(work / "default") as idx:
    meta, vectors = idx.embeddings("file")
report = write_report(results["default"], vectors, meta[label_column].tolist(), work / "report",
                      title="default baseline")
for png in sorted((work / "report").glob("*.png")):
    display(Image(filename=str(png), width=520))"""),
    new_markdown_cell("""## The ladder decision

Read the comparison line above as the decision rule: a setting is better only when the
bootstrap interval of its margin excludes zero. To test rung 2, build a third index of the
same corpus with a frozen encoder (`retrieve index CORPUS --index frozen --encoder beats
--model BEATs_iter3_plus_AS2M.pt`, or `--encoder wav2vec2`, or `--encoder clap`) and run
`retrieve compare --index default --index frozen --label-column ... --group-column ...`.
If the frozen encoder's kNN accuracy beats the baseline's with an interval clear of zero,
it already carries the signal. Add `retrieve eval --probe` to see whether a linear probe on
frozen vectors gains over label transfer. Fine-tuning (rung 3) is worth its cost only when
neither kNN nor a probe on any frozen encoder closes the gap to what the task needs."""),
]


def write_notebook(cells: list, name: str, execute: bool) -> Path:
    """Write ``notebooks/<name>`` from ``cells``; with ``execute``, run it first so the outputs are stored."""
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    out = Path(__file__).resolve().parents[1] / "notebooks" / name
    if execute:
        from nbclient import NotebookClient

        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(out.parent)}}).execute()
    nbformat.write(nb, out)
    print(f"wrote {out}")
    return out


def main() -> None:
    import sys

    write_notebook(CELLS, "knn_label_transfer.ipynb", "--execute" in sys.argv[1:])


if __name__ == "__main__":
    main()
