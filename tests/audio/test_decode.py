import numpy as np
import pytest

from retrieval import synth
from retrieval.audio import decode
from retrieval.audio.decode import DecodeReport, load, probe, stream
from retrieval.errors import AudioError
from tests.conftest import write


def test_mono_mixdown_and_resample_keep_duration(tmp_path):
    x = synth.sine(440, 1.0, 44100)
    stereo = np.stack([x, -x * 0.5], axis=1)
    path = write(tmp_path / "s.wav", stereo, 44100)
    y = load(path, 16000)
    assert y.dtype == np.float32 and abs(len(y) - 16000) <= 1
    assert np.abs(y).max() == pytest.approx(0.125, abs=0.01)  # (x - x/2) / 2, x peaks at 0.5


@pytest.mark.parametrize("rate", [1000, 8000, 22050, 192000])
def test_odd_rates_resample_to_target(tmp_path, rate):
    path = write(tmp_path / f"r{rate}.wav", synth.sine(min(200, rate / 4), 0.7, rate), rate)
    assert abs(len(load(path, 16000)) - round(0.7 * 16000)) <= 2


@pytest.mark.parametrize("subtype", ["PCM_24", "FLOAT", "PCM_U8"])
def test_sample_formats(tmp_path, subtype):
    x = synth.sine(300, 0.5, 16000)
    path = write(tmp_path / f"x_{subtype}.wav", x, 16000, subtype)
    np.testing.assert_allclose(load(path, 16000), x, atol=2e-2 if subtype == "PCM_U8" else 1e-4)


def test_streaming_a_long_file_reads_in_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "BLOCK_FRAMES", 4096)
    path = write(tmp_path / "long.flac", synth.noise(3.0, 22050, seed=1), 22050)
    blocks = list(stream(path, 16000))
    assert len(blocks) > 10 and max(len(b) for b in blocks) < 4096
    whole = np.concatenate(blocks)
    assert abs(len(whole) - 48000) <= 2


def test_nonfinite_samples_are_zeroed_and_counted(tmp_path):
    x = synth.sine(300, 0.2, 16000)
    x[10], x[20] = np.nan, np.inf
    path = write(tmp_path / "nan.wav", x, 16000, "FLOAT")
    report = DecodeReport()
    y = np.concatenate(list(stream(path, 16000, report=report)))
    assert report.nonfinite == 2 and np.isfinite(y).all() and y[10] == 0


def test_crop(tmp_path):
    x = np.arange(16000, dtype=np.float32) / 16000
    path = write(tmp_path / "ramp.wav", x, 16000, "FLOAT")
    y = load(path, 16000, start_s=0.25, end_s=0.5)
    assert len(y) == 4000 and y[0] == pytest.approx(0.25)
    with pytest.raises(AudioError, match="empty crop"):
        load(path, 16000, start_s=0.5, end_s=0.5)


@pytest.mark.parametrize("content", [b"", b"this is not audio at all\n" * 20, b"RIFF\x00\x00\x00\x00WAVEfmt "])
def test_bad_files_raise_audio_error(tmp_path, content):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match="bad.wav"):
        load(path, 16000)


def test_probe_reports_header(tmp_path):
    path = write(tmp_path / "p.wav", np.zeros((800, 3), np.float32), 8000)
    info = probe(path)
    assert (info.sample_rate, info.channels, info.frames) == (8000, 3, 800)
    assert info.duration_s == pytest.approx(0.1)


def test_pyav_decodes_formats_libsndfile_cannot(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.m4a"
    x = synth.sine(440, 1.0, 44100)
    with av.open(str(path), "w") as out:
        st = out.add_stream("aac", rate=44100, layout="mono")
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = 44100
        for packet in st.encode(frame):
            out.mux(packet)
        for packet in st.encode(None):
            out.mux(packet)
    y = load(path, 16000)
    assert abs(len(y) - 16000) < 1600  # aac adds priming samples
    assert np.abs(y).max() > 0.3


def test_a_file_is_opened_once_for_header_length_and_samples(tmp_path, monkeypatch):
    from retrieval.pipeline import DecodedFile, WindowSpec, decode_file, scan_file

    path = write(tmp_path / "once.wav", synth.noise(1.3, 8000, seed=2), 8000)
    opened: list[object] = []
    real_open, real_sf = decode.os.open, decode.sf.SoundFile
    monkeypatch.setattr(decode.os, "open", lambda *a, **k: opened.append("fd") or real_open(*a, **k))
    monkeypatch.setattr(decode.sf, "SoundFile", lambda *a, **k: opened.append("sf") or real_sf(*a, **k))
    spec = WindowSpec(16000, 16000, 8000, None)
    d = decode_file(path, spec)
    assert d.error is None and d.info.declared_frames == d.report.in_frames == 10400
    assert opened == ["fd", "sf"]
    opened.clear()
    out = DecodedFile()
    scan_file(path, spec, out, lambda i, a: True)
    assert out.error is None and out.info.declared_frames == 10400 and opened == ["fd", "sf"]


def test_a_reused_resampler_gives_the_samples_of_a_new_one(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "_RESAMPLERS", {})
    a = write(tmp_path / "a.wav", synth.noise(0.77, 8000, seed=3), 8000)
    b = write(tmp_path / "b.wav", synth.chirp(200, 3000, 0.51, 8000), 8000)
    fresh = load(b, 16000)
    kept = decode._RESAMPLERS[(8000, 16000)]
    assert len(kept) == 1
    used = kept[0]
    load(a, 16000)
    assert decode._RESAMPLERS[(8000, 16000)] == [used]  # the same stream, taken and given back
    again = load(b, 16000)
    assert again.dtype == fresh.dtype and np.array_equal(again, fresh)
    # a stream abandoned half way is not given back, so it cannot leak its state into another file
    next(iter(stream(a, 16000)))
    assert decode._RESAMPLERS[(8000, 16000)] == []
    assert np.array_equal(load(b, 16000), fresh)
