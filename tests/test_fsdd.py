"""Real recordings (FSDD), skipped when ../shared/data/fsdd is absent."""

import shutil

import pytest

from retrieval.index import Index
from retrieval.ingest import IngestOptions, ingest


def test_fsdd_subset_indexes_and_finds_itself(fsdd, tmp_path):
    corpus = tmp_path / "recordings"
    corpus.mkdir()
    files = sorted((fsdd / "recordings").glob("*.wav"))[::10]  # 300 files, every digit and speaker
    for f in files:
        shutil.copy2(f, corpus / f.name)
    summary = ingest(corpus, tmp_path / "ix", options=IngestOptions(labels_csv=fsdd / "labels.csv"))
    assert summary.files_indexed == len(files) and summary.files_failed == 0
    with Index.open(tmp_path / "ix") as idx:
        for f in files[:20]:
            hits = idx.search(f, k=2)
            assert hits.path[0] == f.name and hits.score[0] == pytest.approx(1.0, abs=1e-4)
        meta = idx.files()
    assert {"digit", "speaker", "take", "split"} <= set(meta.columns)
    assert ingest(corpus, tmp_path / "ix").files_indexed == 0
