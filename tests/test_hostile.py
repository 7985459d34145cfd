"""A hostile corpus: every good file is indexed, every bad one is recorded, nothing crashes."""

import json
import os

import numpy as np
import pytest

from retrieval import synth
from retrieval.configure import Choices
from retrieval.index import Index
from retrieval.ingest import IngestOptions, ingest
from tests.conftest import write

GOOD = {
    "rates/1khz.wav": (synth.sine(200, 1.5, 1000), 1000, "PCM_16"),
    "rates/192khz.wav": (synth.chirp(300, 9000, 0.8, 192000), 192000, "PCM_24"),
    "formats/24bit.wav": (synth.sine(500, 1.0, 44100), 44100, "PCM_24"),
    "formats/float.wav": (synth.sine(700, 1.0, 48000) * 1.5, 48000, "FLOAT"),
    "formats/x.flac": (synth.noise(1.2, 22050, seed=3), 22050, "PCM_16"),
    "formats/x.ogg": (synth.sine(900, 1.0, 16000), 16000, "VORBIS"),
    "unicode/ünï cødé 音.wav": (synth.clicks(5, 1.0, 16000), 16000, "PCM_16"),
    "tiny/one_sample.wav": (np.array([0.5], np.float32), 16000, "PCM_16"),
}


@pytest.fixture
def hostile(tmp_path):
    root = tmp_path / "hostile corpus"
    for rel, (audio, sr, subtype) in GOOD.items():
        write(root / rel, audio, sr, subtype)
    write(root / "channels/8ch.wav", np.stack([synth.sine(100 * (c + 1), 1.0, 16000) for c in range(8)], 1),
          16000, "PCM_16")
    nan = synth.sine(400, 1.0, 16000)
    nan[100:200] = np.nan
    nan[300] = np.inf
    write(root / "bad/nan.wav", nan, 16000, "FLOAT")
    write(root / "bad/silent.wav", np.zeros(16000, np.float32), 16000)
    (root / "bad/empty.wav").write_bytes(b"")
    (root / "bad/text.wav").write_text("definitely not audio\n" * 50)
    good = write(root / "bad/truncated.wav", synth.sine(300, 2.0, 16000), 16000)
    (root / "bad/truncated_header.wav").write_bytes(good.read_bytes()[:30])
    (root / "bad/truncated_data.wav").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    write(root / "bad/header_only.wav", np.zeros(0, np.float32), 16000)
    os.symlink(root / "nowhere.wav", root / "bad/dangling.wav")
    os.symlink(root / "bad", root / "bad/loop")
    return root


def test_hostile_corpus(hostile, tmp_path):
    warnings: list[str] = []
    summary = json.loads(ingest(hostile, tmp_path / "ix", Choices(),
                                IngestOptions(commit_every=2, on_warning=warnings.append)).to_json())
    with Index.open(tmp_path / "ix") as idx:
        files = idx.files().set_index("path")
        errors = idx.errors()
    expected_ok = set(GOOD) | {"channels/8ch.wav", "bad/nan.wav", "bad/truncated.wav", "bad/truncated_data.wav"}
    assert expected_ok <= set(files.index[files.status == "ok"])
    assert files.loc["bad/silent.wav", "status"] == "silent"
    failed = set(errors.path[errors.severity == "error"])
    assert failed == {"bad/empty.wav", "bad/text.wav", "bad/truncated_header.wav", "bad/header_only.wav",
                      "bad/dangling.wav"}
    assert errors.path[errors.severity == "error"].is_unique
    warned = set(errors.path[errors.severity == "warning"])
    assert {"bad/nan.wav", "bad/silent.wav"} <= warned
    assert summary["files_failed"] == 5 and summary["files_silent"] == 1
    assert summary["files_indexed"] == len(expected_ok)
    assert len([w for w in warnings if w.startswith("skipped")]) == 5
    # a file cut mid-data keeps what it has
    assert files.loc["bad/truncated_data.wav", "n_samples"] == pytest.approx(16000, abs=200)
    assert files.loc["channels/8ch.wav", "channels"] == 8 and files.loc["rates/192khz.wav", "sample_rate"] == 192000
    # the silent file and its windows are kept out of the vector index
    with Index.open(tmp_path / "ix") as idx:
        meta, _ = idx.embeddings("window")
        assert "bad/silent.wav" not in set(meta.path) and idx.info()["consistent"]
    # a second run retries the failures, records them once, and re-embeds nothing
    again = json.loads(ingest(hostile, tmp_path / "ix").to_json())
    assert again["files_indexed"] == 0 and again["files_failed"] == 5
    with Index.open(tmp_path / "ix") as idx:
        assert len(idx.errors().query("severity == 'error'")) == 5


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_recorded(tmp_path):
    path = write(tmp_path / "c" / "locked.wav", synth.sine(300, 0.5, 16000), 16000)
    write(tmp_path / "c" / "ok.wav", synth.sine(300, 0.5, 16000), 16000)
    path.chmod(0)
    s = ingest(tmp_path / "c", tmp_path / "ix")
    assert s.files_failed == 1 and s.files_indexed == 1


def test_twenty_minute_file_streams(tmp_path):
    sr = 8000
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(20 * 60 * sr)).astype(np.float32)
    write(tmp_path / "c" / "long.wav", audio, sr)
    s = ingest(tmp_path / "c", tmp_path / "ix", Choices(window_s=10.0, hop_s=10.0))
    assert s.files_indexed == 1 and s.windows == 120
    with Index.open(tmp_path / "ix") as idx:
        meta, _ = idx.embeddings("window")
    assert meta.end_s.max() == pytest.approx(1200.0)
