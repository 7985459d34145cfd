"""Memory stays in proportion (issue 11, item 5).

Peaks are measured with tracemalloc, which numpy reports its arrays to: exact and
unaffected by other processes, unlike RSS on a shared machine.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import retrieval.encoders.logmel as logmel
from retrieval.audio.decode import RESAMPLE_OUT_SAMPLES, DecodeReport, stream
from tests.conftest import write

MB = 1 << 20


def traced_peak(fn) -> tuple[object, float]:
    """``(fn(), peak MB allocated while it ran)``."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        out = fn()
        return out, (tracemalloc.get_traced_memory()[1] - before) / MB
    finally:
        tracemalloc.stop()


def test_one_hertz_file_is_upsampled_in_bounded_pieces(tmp_path):
    # 4,000 samples at 1 Hz (8 KB on disk) are 64 M samples at 16 kHz: 256 MB if expanded at once
    path = write(tmp_path / "one_hz.wav", np.random.default_rng(0).uniform(-0.5, 0.5, 4000).astype(np.float32), 1)
    report = DecodeReport()

    def run() -> tuple[int, int]:
        largest = total = 0
        for block in stream(path, 16000, report=report):
            largest, total = max(largest, block.size), total + block.size
        return largest, total

    (largest, total), peak_mb = traced_peak(run)
    assert total == report.out_samples == 64_000_000 and report.in_frames == 4000
    assert largest <= RESAMPLE_OUT_SAMPLES
    # soxr hands its output over in bursts of ~13 M samples (52 MB) at this ratio, whatever it is fed
    assert peak_mb < 120, f"decoding a 1 Hz file peaked at {peak_mb:.0f} MB"


def test_long_window_features_are_computed_in_slices(monkeypatch):
    enc = logmel.LogMelEncoder()
    audio = np.random.default_rng(1).uniform(-0.5, 0.5, 16000 * 300 + 77).astype(np.float32)  # one 5-minute window
    (mel,), peak_mb = traced_peak(lambda: (enc._mel_power(audio),))
    # the mel output is 30,000 x 64 float64 (15 MB) and each slice ~65 MB; the whole window at once ~300 MB
    assert peak_mb < 120, f"a 5-minute window's features peaked at {peak_mb:.0f} MB"
    monkeypatch.setattr(logmel, "MEL_FRAMES_PER_STEP", 10**9)  # all frames in one step
    assert np.array_equal(mel, enc._mel_power(audio))  # slicing changes no bit


@pytest.mark.parametrize("n", [1, 399, 400, 401, 160 * 4096 + 240, 160 * 4096 + 400])
def test_sliced_features_match_at_slice_edges(monkeypatch, n):
    enc = logmel.LogMelEncoder()
    audio = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    sliced = enc._mel_power(audio)
    monkeypatch.setattr(logmel, "MEL_FRAMES_PER_STEP", 10**9)
    assert np.array_equal(sliced, enc._mel_power(audio))


@pytest.mark.parametrize("rate", [1, 8000, 11025, 22050])
def test_sliced_resampling_changes_no_sample(tmp_path, monkeypatch, rate):
    import retrieval.audio.decode as decode

    n = {1: 300}.get(rate, 3 * (1 << 18) + 17)
    path = write(tmp_path / "x.wav", np.random.default_rng(rate).uniform(-0.5, 0.5, n).astype(np.float32), rate)
    sliced = np.concatenate(list(stream(path, 16000)))
    monkeypatch.setattr(decode, "RESAMPLE_OUT_SAMPLES", 1 << 40)  # one soxr call per decoded block
    whole = np.concatenate(list(stream(path, 16000)))
    assert np.array_equal(sliced, whole)
