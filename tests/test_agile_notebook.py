"""The agile-loop notebook runs top to bottom on an FSDD subset (skipped when FSDD is absent)."""

import re
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "agile_loop.ipynb"


def test_agile_loop_notebook_executes(fsdd, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("RETRIEVE_SHARED", str(fsdd.parents[1]))  # the kernel finds the corpus the fixture found
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    # every step printed its figures: the few-shot verdict, the first head, and both loops' ends
    assert re.search(r"the head (beats|does not beat) knn on macro_roc_auc", outputs), outputs[-2000:]
    assert re.search(r"\d+ labels -> held-out ROC-AUC of score_seven: [01]\.\d{3}", outputs)
    for target in ("seven", "seven_random"):
        assert re.search(rf"{target}: 10 labels -> ROC-AUC [01]\.\d{{3}}; 60 labels -> [01]\.\d{{3}}", outputs)
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2
