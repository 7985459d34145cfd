"""Every CSV the project writes neutralises formula-like cells (OWASP CSV injection)."""

import csv

import pandas as pd
import pytest
from click.testing import CliRunner

from retrieval import synth
from retrieval.cli import cli
from retrieval.configure import Choices
from retrieval.errors import InputError
from retrieval.index import Index
from retrieval.ingest import IngestOptions, ingest
from retrieval.safecsv import neutralise, restore, write_csv

HOSTILE = ["=cmd|' /C calc'!A0", "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest.mark.parametrize("cell", HOSTILE)
def test_formula_cells_get_a_quote_and_round_trip(cell):
    assert neutralise(cell) == "'" + cell
    assert restore(neutralise(cell)) == cell


def test_safe_cells_and_numbers_are_untouched(tmp_path):
    assert neutralise("dog") == "dog" and neutralise("a=b") == "a=b" and neutralise(-0.5) == -0.5
    df = pd.DataFrame({"label": HOSTILE, "score": [-0.25] * 6, "n": [-1] * 6, "=col": ["ok"] * 6})
    got = rows(write_csv(df, tmp_path / "x.csv"))
    assert got[0] == ["label", "score", "n", "'=col"]
    assert [r[0] for r in got[1:]] == ["'" + c for c in HOSTILE]
    assert all(r[1] == "-0.25" and r[2] == "-1" for r in got[1:])


def test_missing_folder_is_one_line_error(tmp_path):
    with pytest.raises(InputError, match="does not exist; create it first"):
        write_csv(pd.DataFrame({"a": [1]}), tmp_path / "nope" / "x.csv")
    with pytest.raises(InputError, match="is a folder"):
        write_csv(pd.DataFrame({"a": [1]}), tmp_path)


def test_classify_out_neutralises_hostile_labels_and_paths(tmp_path):
    root = tmp_path / "corpus"
    synth.write_demo_corpus(root, per_class=2)
    hostile_dir = root / "=HYPERLINK(evil)"
    hostile_dir.mkdir()
    (root / "tone" / "tone_00.wav").rename(hostile_dir / "x.wav")
    labels = tmp_path / "meta.csv"
    wav = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.wav"))
    pd.DataFrame({"file": wav, "label": ["=cmd|' /C calc'!A0"] * len(wav)}).to_csv(labels, index=False)
    ix = tmp_path / "ix"
    ingest(root, ix, Choices(), IngestOptions(labels_csv=labels))
    out = tmp_path / "p.csv"
    res = CliRunner().invoke(cli, ["classify", str(hostile_dir), "--index", str(ix), "--out", str(out), "-k", "2"])
    assert res.exit_code == 0, res.output
    (header, row) = rows(out)
    cells = dict(zip(header, row))
    assert cells["predicted"] == "'=cmd|' /C calc'!A0"
    assert not any(c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in row)


def test_zeroshot_out_neutralises(tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    synth.write_demo_corpus(root, per_class=1)
    ingest(root, tmp_path / "ix", Choices())
    preds = pd.DataFrame({"path": ["@a.wav"], "predicted": ["=1+1"], "probability": [0.9], "label": ["-x"]})
    monkeypatch.setattr(Index, "zero_shot", lambda self, *a, **kw: (preds, None))
    out = tmp_path / "z.csv"
    res = CliRunner().invoke(cli, ["zeroshot", "--index", str(tmp_path / "ix"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert rows(out)[1] == ["'@a.wav", "'=1+1", "0.9", "'-x"]


def test_eval_report_csvs_neutralise_labels_and_ids(tmp_path):
    import numpy as np

    from retrieval.evaluate import evaluate
    from retrieval.report import write_report

    v = np.random.default_rng(0).normal(size=(6, 3))
    labels = ["=cmd|' /C calc'!A0", "+x"] * 3
    ids = [f"@file{i}.wav" for i in range(6)]
    result = evaluate(v, labels, np.arange(6), ks=(1,), item_ids=ids)
    write_report(result, v, labels, tmp_path / "rep")
    per_class = rows(tmp_path / "rep" / "per_class.csv")
    assert sorted(r[0] for r in per_class[1:]) == ["'+x", "'=cmd|' /C calc'!A0"]
    preds = rows(tmp_path / "rep" / "predictions.csv")
    assert preds[0][0] == "item" and [r[0] for r in preds[1:]] == ["'" + i for i in ids]
    assert rows(tmp_path / "rep" / "confusions.csv")[0] == ["true", "predicted", "count", "rate"]
    for name in ("per_class.csv", "confusions.csv", "predictions.csv"):
        for row in rows(tmp_path / "rep" / name):
            assert not any(c.startswith(("=", "+", "@", "\t", "\r")) for c in row)
