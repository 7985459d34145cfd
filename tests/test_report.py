"""Markdown report with PNG plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrieval.errors import InputError
from retrieval.evaluate import evaluate
from retrieval.report import markdown_table, write_report


def test_markdown_table_exact() -> None:
    df = pd.DataFrame({"name": ["a|b", "c"], "value": [0.12345, float("nan")], "n": [1, 2]})
    assert markdown_table(df, digits=2) == (
        "| name | value | n |\n| --- | --- | --- |\n| a\\|b | 0.12 | 1 |\n| c | - | 2 |"
    )


def test_write_report_writes_markdown_and_plots(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), 15)
    v = np.eye(6)[truth] * 2 + rng.normal(0, 1.0, (45, 6))
    labels = [f"class{t}" for t in truth]
    groups = [f"s{i % 3}" for i in range(45)]
    result = evaluate(v, labels, np.arange(45), groups, ks=(1, 5))
    path = write_report(result, v, labels, tmp_path / "rep", title="Toy")
    text = path.read_text()
    assert path.name == "report.md" and text.startswith("# Toy")
    assert "same group excluded" in text and "| knn_accuracy@1 |" in text
    for name in ("per_class.png", "confusion.png", "embedding_map.png", "pr_curve.png"):
        png = tmp_path / "rep" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text


def test_write_report_refuses_mismatch_and_file_target(tmp_path: Path) -> None:
    v = np.eye(3)
    result = evaluate(v, ["a", "b", "a"], [0, 1, 2], ks=(1,))
    with pytest.raises(InputError, match="labels has 2 entries"):
        write_report(result, v, ["a", "b"], tmp_path)
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        write_report(result, v, ["a", "b", "a"], target)
