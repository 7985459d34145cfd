"""One conformance test for every registered encoder, in the spirit of the HEAR validator.

Each check runs over the registry (tiny random models from ``conftest.tiny_models``), so a
new encoder is held to the contract of ``retrieval/encoders/base.py`` as soon as it is
registered:

* class attributes and the registry entry agree; the instance satisfies :class:`Encoder`;
* shapes and dtypes: ``(n, T, D)`` float32 with ``D == dim``, times ``(n, T)`` float64,
  mask ``(n, T)`` bool with at least one valid frame per clip; an empty batch works;
* frame times: valid frames start at or after 0, increase, and lie inside the clip (except
  the single frame of a clip shorter than one frame);
* batch invariance: a clip alone equals the clip in a batch of other lengths (``TOL_BATCH``);
* padding: extra zeros on the right of the batch change nothing (``TOL_BATCH``);
* determinism: the same batch twice, and a second instance, give identical frames;
* precisions: every precision outside ``precision_cosine`` (and ``auto``, unknown names) is
  refused with a message naming the valid ones; ``fp32`` is always run, at cosine 1.0;
* bad input (wrong rank, NaN, lengths out of range) is a typed :class:`InputError`;
* text: ``text_embeddings`` gives ``(k, dim)`` float32 when ``has_text``, else an EncoderError.

Fast precisions' closeness to fp32 and their batch invariance are in ``test_precision.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval import encoders
from retrieval.encoders.base import Encoder, EncoderOptions
from retrieval.encoders.precision import PRECISIONS
from retrieval.errors import EncoderError, InputError, RetrievalError

NAMES = encoders.names()
#: Same clip alone, in a batch, or with extra padding: float32 rounding of batched products only.
TOL_BATCH = 1e-5
#: Clip lengths in seconds: shorter than any encoder's frame, odd, and two of one length.
CLIP_S = (0.05, 1.37, 0.4, 1.37)


pytestmark = pytest.mark.usefixtures("offline_one_thread")


@pytest.fixture(scope="module")
def built(tiny_models: dict[str, str | None]) -> dict[str, Encoder]:
    """Name -> an fp32 encoder on its tiny model, built once per module."""
    missing = [n for n in NAMES if n not in tiny_models]
    assert not missing, f"add a tiny model for {missing} to conftest.tiny_models"
    return {n: encoders.build(n, EncoderOptions(model=tiny_models[n])) for n in NAMES}


def clips(sample_rate: int, seconds: tuple[float, ...] = CLIP_S) -> list[np.ndarray]:
    """Seeded chirp + noise clips, float32 in about [-0.6, 0.6]."""
    rng = np.random.default_rng(0)
    out = []
    for i, s in enumerate(seconds):
        t = np.arange(round(s * sample_rate)) / sample_rate
        out.append((0.3 * np.sin(2 * np.pi * (200 + 300 * i) * t * (1 + t)) + 0.1 * rng.standard_normal(t.size))
                   .astype(np.float32))
    return out


def batch(rows: list[np.ndarray], extra: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(n, max_len + extra)`` zero-padded float32 and ``(n,)`` int64 lengths."""
    lengths = np.array([len(r) for r in rows], np.int64)
    audio = np.zeros((len(rows), int(lengths.max()) + extra), np.float32)
    for i, r in enumerate(rows):
        audio[i, : len(r)] = r
    return audio, lengths


def valid(frames, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ``i``'s valid frames ``(T_i, D)`` and their times ``(T_i,)``."""
    return frames.embeddings[i][frames.mask[i]], frames.times_s[i][frames.mask[i]]


@pytest.mark.parametrize("name", NAMES)
def test_class_attributes_match_the_registry(built: dict[str, Encoder], name: str) -> None:
    encoder, entry = built[name], encoders.entry(name)
    cls = type(encoder)
    assert isinstance(encoder, Encoder)
    assert (cls.name, cls.default_model, encoder.has_text) == (name, entry.default_model, entry.has_text)
    assert 0 < cls.default_hop_s <= cls.default_window_s
    assert encoder.sample_rate > 0 and encoder.dim > 0
    assert cls.precision_cosine.get("fp32") == 1.0
    assert set(cls.precision_cosine) <= set(PRECISIONS)
    assert all(0.0 < c <= 1.0 for c in cls.precision_cosine.values())
    assert isinstance(encoder.recipe(), dict)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_and_frame_times(built: dict[str, Encoder], name: str) -> None:
    encoder = built[name]
    rows = clips(encoder.sample_rate)
    frames = encoder.frame_embeddings(*batch(rows))
    n, t, d = frames.embeddings.shape
    assert (n, d) == (len(rows), encoder.dim) and t >= 1
    assert frames.embeddings.dtype == np.float32 and np.isfinite(frames.embeddings).all()
    assert frames.times_s.dtype == np.float64 and frames.mask.dtype == bool
    assert frames.mask.any(axis=1).all(), "every clip of CLIP_S (>= 0.05 s) gives at least one frame"
    for i, row in enumerate(rows):
        _, times = valid(frames, i)
        assert times[0] >= 0 and (np.diff(times) > 0).all()
        assert times[-1] <= max(len(row) / encoder.sample_rate, times[0]), f"clip {i}: frame centre after its end"
    empty = encoder.frame_embeddings(np.zeros((0, 100), np.float32), np.zeros(0, np.int64))
    assert empty.embeddings.shape[0] == 0 and empty.embeddings.shape[2] == encoder.dim


@pytest.mark.parametrize("name", NAMES)
def test_a_clip_alone_equals_the_clip_in_a_batch(built: dict[str, Encoder], name: str) -> None:
    encoder = built[name]
    rows = clips(encoder.sample_rate)
    together = encoder.frame_embeddings(*batch(rows))
    for i, row in enumerate(rows):
        alone = encoder.frame_embeddings(*batch([row]))
        (a, ta), (b, tb) = valid(alone, 0), valid(together, i)
        assert a.shape == b.shape, f"clip {i}: {a.shape[0]} frames alone, {b.shape[0]} in the batch"
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_allclose(a, b, rtol=0, atol=TOL_BATCH, err_msg=f"{name} clip {i}")


@pytest.mark.parametrize("name", NAMES)
def test_right_padding_changes_nothing(built: dict[str, Encoder], name: str) -> None:
    encoder = built[name]
    rows = clips(encoder.sample_rate)
    tight = encoder.frame_embeddings(*batch(rows))
    loose = encoder.frame_embeddings(*batch(rows, extra=encoder.sample_rate // 3))
    for i in range(len(rows)):
        (a, ta), (b, tb) = valid(tight, i), valid(loose, i)
        assert a.shape == b.shape, f"clip {i}: padding changed the frame count"
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_allclose(a, b, rtol=0, atol=TOL_BATCH, err_msg=f"{name} clip {i}")


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(built: dict[str, Encoder], tiny_models: dict[str, str | None], name: str) -> None:
    encoder = built[name]
    audio, lengths = batch(clips(encoder.sample_rate))
    first = encoder.frame_embeddings(audio, lengths)
    again = encoder.frame_embeddings(audio.copy(), lengths.copy())
    other = encoders.build(name, EncoderOptions(model=tiny_models[name])).frame_embeddings(audio, lengths)
    for out in (again, other):
        np.testing.assert_array_equal(out.embeddings, first.embeddings)
        np.testing.assert_array_equal(out.times_s, first.times_s)
        np.testing.assert_array_equal(out.mask, first.mask)
    assert encoders.build(name, EncoderOptions(model=tiny_models[name])).recipe() == encoder.recipe()


def cpu_precisions(name: str) -> list[str]:
    """The precisions encoder ``name`` claims on the CPU (fp16 is CUDA only for every family)."""
    return [p for p in encoders.entry(name).load_class().precision_cosine if p != "fp16"]


REFUSED = [(n, p) for n in NAMES for p in (*PRECISIONS, "auto", "fp8") if p not in cpu_precisions(n)]


@pytest.mark.parametrize(("name", "precision"), REFUSED)
def test_precisions_outside_the_claimed_ones_are_refused(tiny_models: dict[str, str | None], name: str,
                                                         precision: str) -> None:
    with pytest.raises(RetrievalError) as info:
        encoders.build(name, EncoderOptions(model=tiny_models[name], precision=precision))
    message = str(info.value)
    assert precision in message
    if precision != "auto":  # auto is resolved before any encoder is built; its message says so
        claimed = cpu_precisions(name)
        assert all(p in message for p in claimed), f"{name} {precision}: {message!r} does not name {claimed}"


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_a_typed_error(built: dict[str, Encoder], name: str) -> None:
    encoder = built[name]
    audio, lengths = batch(clips(encoder.sample_rate, (0.3, 0.2)))
    nan = audio.copy()
    nan[0, 5] = np.nan
    for bad_audio, bad_lengths in ((audio[0], lengths), (nan, lengths), (audio, lengths + audio.shape[1]),
                                   (audio, np.zeros_like(lengths)), (audio, lengths[:1])):
        with pytest.raises(InputError):
            encoder.frame_embeddings(bad_audio, bad_lengths)


@pytest.mark.parametrize("name", NAMES)
def test_text_tower_or_a_clear_refusal(built: dict[str, Encoder], name: str) -> None:
    encoder = built[name]
    if not encoder.has_text:
        with pytest.raises(EncoderError, match="no text tower"):
            encoder.text_embeddings(["a dog barking"])
        return
    vectors = encoder.text_embeddings(["a dog barking", "rain"])
    assert vectors.shape == (2, encoder.dim) and vectors.dtype == np.float32 and np.isfinite(vectors).all()
