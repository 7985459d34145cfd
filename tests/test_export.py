"""export: which vectors (searched or raw), which level, and a one-line error for a bad target."""

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from retrieval import synth
from retrieval.cli import cli
from retrieval.configure import Choices
from retrieval.errors import InputError
from retrieval.index import Index
from retrieval.ingest import ingest


@pytest.fixture(scope="module")
def whitened(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    synth.write_demo_corpus(root, per_class=4)
    ix = tmp_path_factory.mktemp("ix") / "ix"
    ingest(root, ix, Choices(postprocess="whiten"))
    return ix


def embeddings(path):
    table = pq.read_table(path)
    return table, np.stack(table.column("embedding").to_pylist())


def test_raw_vectors_are_the_stored_pooled_vectors(whitened, tmp_path):
    with Index.open(whitened) as idx:
        s = idx.export(tmp_path / "raw.parquet", vectors="raw", level="file")
        meta, raw = idx.embeddings("file", processed=False)
        _, searched = idx.embeddings("file")
    table, emb = embeddings(tmp_path / "raw.parquet")
    assert s.vectors == "raw" and not s.normalised and s.rows == s.files == len(meta) and s.windows == 0
    assert set(table.column("level").to_pylist()) == {"file"}
    np.testing.assert_array_equal(emb, raw)
    assert not np.allclose(np.linalg.norm(emb, axis=1), 1.0)
    facts = json.loads(table.schema.metadata[b"retrieve"])
    assert facts["vectors"] == "raw" and facts["postprocess"] == "whiten" and facts["recipe"]["postprocess"] == "whiten"
    # the default is what the index searches: whitened, unit length, and different from raw
    default = tmp_path / "searched.parquet"
    with Index.open(whitened) as idx:
        s2 = idx.export(default, level="file")
    _, emb2 = embeddings(default)
    assert s2.vectors == "searched" and s2.normalised
    np.testing.assert_allclose(emb2, searched, atol=1e-6)
    assert json.loads(pq.read_table(default).schema.metadata[b"retrieve"])["vectors"] == "searched"


def test_levels(whitened, tmp_path):
    with Index.open(whitened) as idx:
        win = idx.export(tmp_path / "w.parquet", level="window")
        both = idx.export(tmp_path / "b.parquet")
        n_win = len(idx.embeddings("window")[0])
    assert win.rows == win.windows == n_win and win.files == 0
    assert set(pq.read_table(tmp_path / "w.parquet").column("level").to_pylist()) == {"window"}
    assert both.rows == both.files + both.windows and both.windows == n_win and both.files == 20


def test_cli_json_help_and_missing_folder(whitened, tmp_path):
    run = CliRunner().invoke
    out = run(cli, ["export", "--index", str(whitened), str(tmp_path / "v.parquet"), "--vectors", "raw",
                    "--level", "window", "--json"])
    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout)
    assert body["vectors"] == "raw" and body["level"] == "window" and body["rows"] == body["windows"] > 0
    text = run(cli, ["export", "--index", str(whitened), str(tmp_path / "v2.parquet")])
    assert "searched vectors (post-processing whiten, L2-normalised)" in text.output
    helptext = run(cli, ["export", "--help"]).output
    assert "--vectors [searched|raw]" in helptext and "--level [file|window|both]" in helptext
    assert "L2-normalised" in helptext and "must" in helptext
    proc = subprocess.run([sys.executable, "-m", "retrieval", "export", "--index", str(whitened),
                           str(tmp_path / "missing" / "v.parquet")], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"Error: folder {tmp_path / 'missing'} does not exist; "
                                   f"create it first (mkdir -p {tmp_path / 'missing'})")
    assert not (tmp_path / "missing").exists()


def test_no_file_vectors_is_said(tmp_path):
    root = tmp_path / "corpus"
    synth.write_demo_corpus(root, per_class=1)
    ingest(root, tmp_path / "ix", Choices(pooling="none"))
    with Index.open(tmp_path / "ix") as idx:
        s = idx.export(tmp_path / "b.parquet")
        assert s.files == 0 and s.windows > 0 and "no file vectors" in s.note
        with pytest.raises(InputError, match="nothing to export.*--level window"):
            idx.export(tmp_path / "f.parquet", level="file")
    assert not (tmp_path / "f.parquet").exists()
