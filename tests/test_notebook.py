"""The example notebook runs top to bottom (FSDD subset when present, else the generated corpus)."""

import re
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "knn_label_transfer.ipynb"


def test_knn_label_transfer_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "label-transfer accuracy" in outputs
    # the comparison of the two indexes printed its verdict (one of them wins, with an interval)
    assert re.search(r"(default beats naive|naive beats default) on knn_accuracy@1 by ", outputs), outputs[-2000:]
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 3
