"""ClapEncoder on tiny random checkpoints, against the naive transformers reference.

The reference is what a user would write: ``ClapProcessor`` + ``get_audio_features`` /
``ClapModel(...)`` one file at a time. Tolerances: file vectors cosine >= 0.9999,
text-audio cosine within 1e-3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from transformers import ClapModel, ClapProcessor  # noqa: E402

try:
    from tests.encoders._clap_models import clap_clips, padded, set_offline, tiny_clap
except ImportError:  # pytest run without the repository root on sys.path
    from _clap_models import clap_clips, padded, set_offline, tiny_clap  # type: ignore[no-redef]

from retrieval.encoders import build  # noqa: E402
from retrieval.encoders.base import Encoder, EncoderOptions  # noqa: E402
from retrieval.encoders.clap import ClapEncoder  # noqa: E402
from retrieval.errors import InputError, UnknownNameError  # noqa: E402
from retrieval.pooling import pool_file, pool_windows  # noqa: E402
from retrieval.zeroshot import zero_shot_scores  # noqa: E402

SR = 48000
PARITY_SECONDS = [0.3, 2.0, 7.0, 10.0]


@pytest.fixture(scope="module", autouse=True)
def _offline() -> None:
    with pytest.MonkeyPatch.context() as mp:
        set_offline(mp)
        yield


@pytest.fixture(scope="module")
def unfused(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_clap(tmp_path_factory)


@pytest.fixture(scope="module")
def fused(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_clap(tmp_path_factory, fusion=True)


@pytest.fixture(scope="module")
def encoder(unfused: Path) -> ClapEncoder:
    return ClapEncoder(EncoderOptions(model=str(unfused)))


def naive_audio(folder: Path, clips: list[np.ndarray]) -> np.ndarray:
    """The reference: processor + get_audio_features, one file at a time; ``(n, D)``."""
    processor = ClapProcessor.from_pretrained(folder)
    model = ClapModel.from_pretrained(folder).eval()
    out = []
    for clip in clips:
        inputs = processor(audio=clip, sampling_rate=SR, return_tensors="pt")
        # fusion checkpoints: the reference flips is_longer at random for short clips; keep the truth
        inputs["is_longer"] = torch.zeros_like(inputs["is_longer"])
        with torch.no_grad():
            emb = model.get_audio_features(**inputs)
        emb = getattr(emb, "pooler_output", emb)  # transformers 5 returns an output object
        out.append(emb[0].numpy())
    return np.stack(out)


def file_vectors(enc: ClapEncoder, clips: list[np.ndarray], extra: int = 0) -> np.ndarray:
    frames = enc.frame_embeddings(*padded(clips, extra))
    windows, counts = pool_windows(frames.embeddings, frames.mask, "mean")
    return np.stack([pool_file(windows[i : i + 1], counts[i : i + 1], "mean") for i in range(len(clips))])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("kind", ["unfused", "fused"])
def test_batched_file_vectors_match_naive_reference(kind: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(kind)
    enc = ClapEncoder(EncoderOptions(model=str(folder))) if kind == "fused" else request.getfixturevalue("encoder")
    clips = clap_clips(PARITY_SECONDS, seed=1)
    ours = file_vectors(enc, clips, extra=1000)
    ref = naive_audio(folder, clips)
    cos = cosines(ours, ref)
    print(f"{kind}: min cosine to naive reference {cos.min():.8f}")
    assert cos.min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_frames_shape_times_and_mask(encoder: ClapEncoder) -> None:
    clips = clap_clips([0.3, 10.0])
    frames = encoder.frame_embeddings(*padded(clips))
    assert frames.embeddings.shape == (2, 1, encoder.dim) and frames.embeddings.dtype == np.float32
    np.testing.assert_allclose(frames.times_s[:, 0], [0.15, 5.0])
    assert frames.mask.all() and frames.mask.shape == (2, 1)
    assert isinstance(encoder, Encoder)
    assert (encoder.sample_rate, encoder.dim, encoder.has_text) == (SR, 16, True)
    assert ClapEncoder.default_window_s == 10.0 and ClapEncoder.default_hop_s == 5.0
    assert ClapEncoder.default_pooling == "mean" and ClapEncoder.default_model == "laion/clap-htsat-unfused"


def test_clip_alone_equals_clip_in_batch(encoder: ClapEncoder) -> None:
    clips = clap_clips([0.5, 3.3, 10.0], seed=4)
    together = encoder.frame_embeddings(*padded(clips, extra=4321)).embeddings[:, 0]
    for i, clip in enumerate(clips):
        alone = encoder.frame_embeddings(*padded([clip])).embeddings[0, 0]
        np.testing.assert_allclose(alone, together[i], rtol=0, atol=1e-6)


def test_windows_over_ten_seconds_are_refused(encoder: ClapEncoder) -> None:
    audio, lengths = padded(clap_clips([10.0 + 1 / SR]))
    with pytest.raises(InputError, match=r"at most 480000 samples .*--window-s 10"):
        encoder.frame_embeddings(audio, lengths)
    encoder.check_window(10.0)
    with pytest.raises(InputError, match="--window-s 10"):
        encoder.check_window(12.0)


def test_text_scores_match_reference_cosine_and_logits(encoder: ClapEncoder, unfused: Path) -> None:
    texts = ["the sound of a dog", "rain on a roof", "", "a very long description " * 40]
    clips = clap_clips(PARITY_SECONDS, seed=2)
    text = encoder.text_embeddings(texts)
    assert text.shape == (4, encoder.dim) and text.dtype == np.float32
    audio = file_vectors(encoder, clips)
    processor = ClapProcessor.from_pretrained(unfused)
    model = ClapModel.from_pretrained(unfused).eval()
    tok = processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    feats = processor.feature_extractor(clips, sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], **feats)
    ref_cos = (out.logits_per_audio / model.logit_scale_a.exp()).detach().numpy()
    diff = np.abs(audio @ text.T - ref_cos).max()
    print(f"text-audio cosine max abs diff {diff:.2e}")
    assert diff <= 1e-3
    scores = zero_shot_scores(audio, text, logit_scale=encoder.logit_scale)
    np.testing.assert_allclose(scores.probs, out.logits_per_audio.softmax(-1).detach().numpy(), atol=1e-4)
    assert encoder.logit_scale == pytest.approx(20.0, rel=1e-5)


def test_text_vectors_are_batch_invariant(encoder: ClapEncoder) -> None:
    texts = ["dog", "a dog barking loudly in the distance", "rain"]
    together = encoder.text_embeddings(texts)
    for i, t in enumerate(texts):
        np.testing.assert_allclose(encoder.text_embeddings([t])[0], together[i], atol=1e-5)
    assert encoder.text_embeddings([]).shape == (0, encoder.dim)
    with pytest.raises(InputError, match="list of strings"):
        encoder.text_embeddings("dog")  # type: ignore[arg-type]


def test_recipe_and_options(encoder: ClapEncoder, unfused: Path) -> None:
    recipe = encoder.recipe()
    assert recipe["checkpoint"] == str(unfused) and recipe["precision"] == "fp32"
    assert recipe["format"] == "transformers" and recipe["front_end"]["truncation"] == "rand_trunc"
    assert recipe["front_end"]["max_samples"] == 480000
    with pytest.raises(InputError, match="unknown clap settings"):
        ClapEncoder(EncoderOptions(model=str(unfused), extra={"windows": 3}))
    with pytest.raises(UnknownNameError, match="fp32, fp16, bf16, int8"):
        ClapEncoder(EncoderOptions(model=str(unfused), precision="fp8"))
    with pytest.raises(InputError, match="--precision bf16"):
        ClapEncoder(EncoderOptions(model=str(unfused), precision="fp16"))  # CUDA only
    with pytest.raises(InputError, match="CPU only"):
        ClapEncoder(EncoderOptions(model=str(unfused), precision="int8", device="cuda"))
    with pytest.raises(InputError, match="drop --layer"):
        ClapEncoder(EncoderOptions(model=str(unfused), layer="3"))
    with pytest.raises(InputError, match="positive integer"):
        ClapEncoder(EncoderOptions(model=str(unfused), extra={"batch_size": 0}))
    with pytest.raises(InputError, match="true or false"):
        ClapEncoder(EncoderOptions(model=str(unfused), extra={"trust_pickle": "maybe"}))
    texty = ClapEncoder(EncoderOptions(model=str(unfused), extra={"batch_size": "3", "trust_pickle": "false"}))
    assert texty.batch_size == 3 and texty.recipe() == recipe  # batch size does not change vectors


def test_registry_builds_from_env_var(unfused: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRIEVE_CLAP_MODEL", str(unfused))
    enc = build("clap", EncoderOptions(extra={"batch_size": 2}))
    assert enc.recipe()["checkpoint"] == str(unfused) and enc.batch_size == 2


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_fast_modes_stay_close_to_fp32(precision: str, encoder: ClapEncoder, unfused: Path) -> None:
    fast = ClapEncoder(EncoderOptions(model=str(unfused), precision=precision))
    clips = clap_clips([1.0, 6.0], seed=7)
    cos = cosines(file_vectors(fast, clips), file_vectors(encoder, clips))
    text_cos = cosines(fast.text_embeddings(["dog", "rain"]), encoder.text_embeddings(["dog", "rain"]))
    print(f"{precision}: audio cosine to fp32 {cos.min():.5f}, text {text_cos.min():.5f}")
    assert cos.min() > 0.99 and text_cos.min() > 0.99
    assert fast.recipe()["precision"] == precision
