"""Query by example: self-match first, determinism across batches, windows, filters, arrays."""

import numpy as np
import pytest

from retrieval import synth
from retrieval.configure import Choices
from retrieval.embed import embed_windows
from retrieval.encoders import build
from retrieval.errors import AudioError, IndexNotFoundError, InputError
from retrieval.index import Index, find_index
from retrieval.ingest import ingest
from tests.conftest import write


@pytest.fixture
def indexed(corpus, tmp_path):
    ix = tmp_path / "ix"
    ingest(corpus, ix)
    return corpus, ix


def test_every_file_finds_itself_first(indexed):
    corpus, ix = indexed
    with Index.open(ix) as idx:
        for path in sorted(corpus.rglob("*.wav")):
            hits = idx.search(path, k=3)
            assert hits.path[0] == path.relative_to(corpus).as_posix()
            assert hits.score[0] == pytest.approx(1.0, abs=1e-5)
            assert hits.score.is_monotonic_decreasing and hits.path.is_unique


def test_same_vector_alone_or_in_any_batch():
    enc = build("logmel")
    clips = [synth.demo_clip(c, i) for c in synth.DEMO_CLASSES for i in range(3)]
    clips += [np.array([0.3], np.float32), synth.noise(0.013, 16000, seed=4)]
    alone = np.stack([embed_windows(enc, [c], "meanstd", 1)[0][0] for c in clips])
    for batch_size in (2, 5, 64):
        together, _ = embed_windows(enc, clips, "meanstd", batch_size)
        np.testing.assert_array_equal(together, alone)
    reversed_, _ = embed_windows(enc, clips[::-1], "meanstd", 7)
    np.testing.assert_array_equal(reversed_[::-1], alone)


def test_windows_report_where_the_match_is(tmp_path):
    corpus = tmp_path / "c"
    rng = np.random.default_rng(0)
    long = (0.05 * rng.standard_normal(16000 * 12)).astype(np.float32)
    event = synth.chirp(500, 4000, 1.0, 16000)
    long[16000 * 7: 16000 * 8] += event
    write(corpus / "long.wav", long, 16000)
    write(corpus / "other.wav", synth.sine(300, 3.0, 16000), 16000)
    ix = tmp_path / "ix"
    ingest(corpus, ix, Choices(window_s=1.0, hop_s=0.5, pooling="mean"))
    with Index.open(ix) as idx:
        hits = idx.search(event + long[16000 * 7: 16000 * 8] * 0, k=3, windows=True, sample_rate=16000)
        assert hits.path[0] == "long.wav" and hits.start_s[0] == pytest.approx(7.0)
        crop = idx.search(corpus / "long.wav", k=1, start_s=7.0, end_s=8.0)
        assert crop.path[0] == "long.wav" and 6.5 <= crop.start_s[0] <= 7.5


def test_array_queries_need_a_rate_and_are_resampled(indexed):
    corpus, ix = indexed
    import soundfile as sf

    audio, sr = sf.read(corpus / "chirp" / "chirp_02.wav", dtype="float32")
    with Index.open(ix) as idx:
        with pytest.raises(InputError, match="sample_rate"):
            idx.search(audio, k=1)
        assert idx.search(audio, k=1, sample_rate=sr).path[0] == "chirp/chirp_02.wav"
        import soxr

        up = soxr.resample(audio, sr, 44100)
        assert idx.search(np.stack([up, up], 1), k=1, sample_rate=44100).path[0] == "chirp/chirp_02.wav"


def test_filters_and_bad_queries(indexed, tmp_path):
    corpus, ix = indexed
    with Index.open(ix) as idx:
        hits = idx.search(corpus / "tone" / "tone_01.wav", k=20, where="label != 'tone'")
        assert "tone" not in set(hits.label) and len(hits) == 16
        assert idx.search(corpus / "tone" / "tone_01.wav", k=5, where="label = 'nothing'").empty
        (tmp_path / "bad.wav").write_text("nope")
        with pytest.raises(AudioError, match="bad.wav"):
            idx.search(tmp_path / "bad.wav")
        with pytest.raises(InputError, match="unknown column"):
            idx.search(corpus / "tone" / "tone_01.wav", where="colour = red")


def test_default_index_is_the_only_one(indexed, monkeypatch, tmp_path):
    monkeypatch.setenv("RETRIEVE_INDEXES", str(tmp_path / "none"))
    with pytest.raises(IndexNotFoundError, match="no index"):
        find_index(None)
    monkeypatch.setenv("RETRIEVE_INDEXES", str(tmp_path))
    assert find_index(None) == tmp_path / "ix"
    ingest(indexed[0], tmp_path / "second")
    with pytest.raises(IndexNotFoundError, match="2 indexes"):
        find_index(None)


def test_export_parquet(indexed, tmp_path):
    import pyarrow.parquet as pq

    with Index.open(indexed[1]) as idx:
        n = idx.export(tmp_path / "out.parquet").rows
        dim = idx.store.search_dim
    table = pq.read_table(tmp_path / "out.parquet")
    assert n == table.num_rows == 40
    assert {"path", "level", "start_s", "end_s", "label", "embedding"} <= set(table.column_names)
    emb = np.stack(table.column("embedding").to_pylist())
    assert emb.shape == (40, dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_faiss_is_rebuilt_when_deleted_or_stale(indexed):
    _, ix = indexed
    (ix / "windows.faiss").unlink()
    (ix / "files.faiss").write_bytes(b"broken")
    with Index.open(ix) as idx:
        info = idx.info()
    assert info["consistent"] and set(info["repaired_on_open"]) == {"window", "file"}
    with Index.open(ix) as idx:
        assert idx.info()["repaired_on_open"] == []
