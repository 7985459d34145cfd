"""The report's per-class and confusion plots show every label, or name the ones they leave out."""

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from retrieval import report
from retrieval.evaluate import evaluate
from retrieval.report import write_report


def labelled(n_classes: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(n_classes), 4)
    v = np.eye(n_classes)[truth] + rng.normal(0, 0.35, (truth.size, n_classes))
    return v, [f"c{t:03d}" for t in truth]


@pytest.fixture
def drawn(monkeypatch):
    """file name -> (title, y tick labels, x tick labels) of every figure the report saves."""
    seen: dict[str, tuple[str, list[str], list[str]]] = {}
    save = Figure.savefig

    def spy(fig, path, *args, **kwargs):
        ax = fig.axes[0]
        seen[Path(path).name] = (ax.get_title(), [t.get_text() for t in ax.get_yticklabels()],
                                 [t.get_text() for t in ax.get_xticklabels()])
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return seen


def test_fifty_labels_are_all_drawn_and_bars_sorted_by_f1(tmp_path, drawn):
    v, labels = labelled(50)
    result = evaluate(v, labels, np.arange(len(labels)), ks=(1, 5))
    text = write_report(result, v, labels, tmp_path).read_text()
    classes = sorted(set(labels))
    _, bars, _ = drawn["per_class.png"]
    assert sorted(bars) == classes
    pc = result.per_class.set_index("label")
    f1 = [pc.loc[b, "f1"] for b in bars]
    assert f1 == sorted(f1, reverse=True) and f1[0] > f1[-1]
    title, rows, cols = drawn["confusion.png"]
    assert rows == cols == classes and "all 50 labels" in title
    assert "labels 1-50 of 50" in text and "left out" not in text.split("## Plots")[1]


def test_many_labels_page_the_bars_and_name_what_the_matrix_leaves_out(tmp_path, drawn, monkeypatch):
    monkeypatch.setattr(report, "LABELS_PER_PAGE", 12)  # small limits keep the PNGs (and the test) small
    monkeypatch.setattr(report, "MAX_CONFUSION_LABELS", 20)
    n = report.MAX_CONFUSION_LABELS + 20
    v, labels = labelled(n)
    result = evaluate(v, labels, np.arange(len(labels)), ks=(1,))
    text = write_report(result, v, labels, tmp_path).read_text()
    pages = sorted(name for name in drawn if name.startswith("per_class"))
    assert len(pages) == -(-n // report.LABELS_PER_PAGE)
    assert sorted(b for p in pages for b in drawn[p][1]) == sorted(set(labels))
    for p in pages:
        assert f"]({p})" in text
    title, rows, _ = drawn["confusion.png"]
    shown, left_out = report.confusion_labels(result)
    assert rows == shown and len(shown) == report.MAX_CONFUSION_LABELS and len(left_out) == 20
    assert f"{len(shown)} of {n} labels" in title and "20 left out" in title
    assert ("left out (20, the table above has them all): " + ", ".join(left_out) + ".") in text
    # the labels left out are those with the fewest confusions
    cm = result.confusion_matrix.to_numpy()
    off = dict(zip(result.confusion_matrix.index, cm.sum(0) + cm.sum(1) - 2 * np.diag(cm)))
    assert max(off[c] for c in left_out) <= min(off[c] for c in shown)


def test_a_smaller_report_removes_stale_pages(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "LABELS_PER_PAGE", 4)
    v, labels = labelled(report.LABELS_PER_PAGE + 5)
    write_report(evaluate(v, labels, np.arange(len(labels)), ks=(1,)), v, labels, tmp_path)
    assert (tmp_path / "per_class_2.png").is_file()
    v, labels = labelled(3)
    write_report(evaluate(v, labels, np.arange(len(labels)), ks=(1,)), v, labels, tmp_path)
    assert not (tmp_path / "per_class_2.png").exists()
