"""The spectral baseline encoder: settings, trimming, normalisation, invariances."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.encoders.base import EncoderOptions
from retrieval.encoders.logmel import LogMelEncoder, normalize, trim_mask
from retrieval.errors import InputError
from retrieval.pooling import pool_file, pool_windows

SR = 16000


def tone(seconds: float, hz: float = 440.0, seed: int = 0) -> np.ndarray:
    """A sine with a little seeded noise, float32."""
    t = np.arange(int(round(seconds * SR))) / SR
    noise = np.random.default_rng(seed).normal(0, 1e-3, t.size)
    return (0.3 * np.sin(2 * np.pi * hz * t) + noise).astype(np.float32)


def embed(enc: LogMelEncoder, x: np.ndarray) -> np.ndarray:
    fe = enc.frame_embeddings(x[None], np.array([x.size]))
    v, c = pool_windows(fe.embeddings, fe.mask, enc.default_pooling)
    return pool_file(v, c, enc.default_pooling)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_defaults() -> None:
    enc = LogMelEncoder()
    cfg = enc.config
    assert (cfg.feature, cfg.n_mfcc, cfg.deltas, cfg.norm, cfg.trim_db) == ("mfcc", 20, False, "gain", 40.0)
    assert (enc.dim, enc.default_pooling) == (20, "pyramid")
    assert LogMelEncoder(EncoderOptions(extra={"deltas": True})).dim == 60
    assert LogMelEncoder(EncoderOptions(extra={"feature": "logmel"})).dim == 64
    assert enc.recipe()["norm"] == "gain" and enc.recipe()["trim_db"] == 40.0


def test_trim_mask_by_hand() -> None:
    # Frame levels 10*log10(sum): -50, 0, -60, -10, -45 dB; within 40 dB of 0: frames 1 and 3,
    # so frames 1..3 are kept (the quiet frame 2 between them stays).
    mel = np.array([[1e-5], [1.0], [1e-6], [0.1], [10 ** -4.5]])
    assert trim_mask(mel, 40.0).tolist() == [False, True, True, True, False]
    assert trim_mask(mel, None).all()
    assert trim_mask(np.zeros((3, 2)), 40.0).all()  # digital silence keeps every frame


def test_normalize_by_hand() -> None:
    feat = np.array([[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]])
    keep = np.array([True, True, False])  # statistics over the first two frames only
    assert normalize(feat, keep, "gain", "mfcc").tolist() == [[-1.0, 2.0], [1.0, 6.0], [98.0, 100.0]]
    assert normalize(feat, keep, "gain", "logmel").tolist() == [[-2.0, -1.0], [0.0, 3.0], [97.0, 97.0]]
    assert normalize(feat, keep, "cmn", "mfcc").tolist() == [[-1.0, -2.0], [1.0, 2.0], [98.0, 96.0]]
    assert normalize(feat, keep, "cmvn", "mfcc")[:2].tolist() == [[-1.0, -1.0], [1.0, 1.0]]
    assert normalize(feat, keep, "none", "mfcc").tolist() == feat.tolist()


def test_silence_around_a_sound_is_masked() -> None:
    x = np.concatenate([np.zeros(SR // 2, np.float32), tone(0.5), np.zeros(SR // 2, np.float32)])
    fe = LogMelEncoder().frame_embeddings(x[None], np.array([x.size]))
    kept = np.flatnonzero(fe.mask[0])
    t = fe.times_s[0, kept]
    assert 0.45 < t.min() < 0.52 and 0.98 < t.max() < 1.05


def test_gain_invariance_and_trim_alignment() -> None:
    enc = LogMelEncoder()
    x = tone(0.7, 300.0)
    np.testing.assert_allclose(embed(enc, 0.25 * x), embed(enc, x), atol=1e-4)
    # Silence around the sound barely moves the pyramid (cosine 0.996 measured; frames
    # straddling the onset differ); without trimming it moves it a lot (0.52 measured).
    padded = np.concatenate([np.zeros(4000, np.float32), x, np.zeros(2400, np.float32)])
    assert cosine(embed(enc, padded), embed(enc, x)) > 0.99
    untrimmed = LogMelEncoder(EncoderOptions(extra={"trim_db": None}))
    assert cosine(embed(untrimmed, padded), embed(untrimmed, x)) < 0.7


def test_batch_invariance() -> None:
    enc = LogMelEncoder()
    clips = [tone(0.33, 200.0, 1), tone(1.01, 900.0, 2), tone(0.02, 500.0, 3)]
    n = max(c.size for c in clips)
    batch = np.zeros((3, n), np.float32)
    for i, c in enumerate(clips):
        batch[i, : c.size] = c
    together = enc.frame_embeddings(batch, np.array([c.size for c in clips]))
    for i, c in enumerate(clips):
        alone = enc.frame_embeddings(c[None], np.array([c.size]))
        t = alone.embeddings.shape[1]
        np.testing.assert_array_equal(together.embeddings[i, :t], alone.embeddings[0])
        np.testing.assert_array_equal(together.mask[i, :t], alone.mask[0])
        assert not together.mask[i, t:].any()


def test_bad_settings_raise() -> None:
    with pytest.raises(InputError, match="unknown logmel settings"):
        LogMelEncoder(EncoderOptions(extra={"cmn": True}))
    with pytest.raises(InputError, match="norm 'zscore'; choose one of: none, gain, cmn, cmvn"):
        LogMelEncoder(EncoderOptions(extra={"norm": "zscore"}))
    with pytest.raises(InputError, match="trim_db must be a positive number"):
        LogMelEncoder(EncoderOptions(extra={"trim_db": -3}))
    with pytest.raises(InputError, match="n_mfcc \\(80\\) cannot exceed n_mels \\(64\\)"):
        LogMelEncoder(EncoderOptions(extra={"n_mfcc": 80}))
    assert LogMelEncoder(EncoderOptions(extra={"trim_db": "none"})).config.trim_db is None


def test_rows_computed_together_equal_rows_alone(monkeypatch) -> None:
    """Frames of all rows share FFT slices; a row's features (and a short row's zero padding)
    do not depend on its neighbours, on the slice size, or on what the padding holds."""
    from retrieval.encoders import logmel

    rng = np.random.default_rng(5)
    lengths = np.array([399, 16000, 401, 7777, 1, 30000])
    audio = rng.uniform(-1, 1, (len(lengths), lengths.max())).astype(np.float32)  # padding not zero
    enc = LogMelEncoder()
    for step in (7, 128, 10**9):
        monkeypatch.setattr(logmel, "MEL_FRAMES_PER_STEP", step)
        batch = enc.frame_embeddings(audio, lengths)
        for i, n in enumerate(lengths):
            clip = audio[i, :n]
            alone = enc.frame_embeddings(np.pad(clip, (0, 3))[None], np.array([n]))
            t = alone.embeddings.shape[1]
            assert np.array_equal(batch.embeddings[i, :t], alone.embeddings[0])
            assert np.array_equal(batch.mask[i, :t], alone.mask[0]) and not batch.mask[i, t:].any()
