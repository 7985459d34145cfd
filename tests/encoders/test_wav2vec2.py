"""wav2vec2-family encoder: tiny random checkpoints built here, loaded through the public path.

Reference: transformers' own feature extractor and model, one unpadded clip at a time.
Tolerances: frames within 1e-5 (float32 rounding of differently shaped matmuls);
pooled clip vectors at cosine >= 0.999 (the contract the brief states; measured ~1.0).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoModel,
    Data2VecAudioConfig,
    Data2VecAudioModel,
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)

from retrieval.encoders import build
from retrieval.encoders.base import Encoder, EncoderOptions
from retrieval.encoders.wav2vec2 import Wav2Vec2Encoder, conv_geometry, normalise, plan_groups, snapshot_revision
from retrieval.errors import EncoderError, InputError, UnknownNameError, WeightsNotFoundError
from retrieval.pooling import pool_windows

SR = 16000
N_LAYERS = 3
COMMON = dict(
    hidden_size=32, num_hidden_layers=N_LAYERS, num_attention_heads=2, intermediate_size=37,
    conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
)
#: name -> (config class, model class, config overrides, feature-extractor settings)
MODELS = {
    # like facebook/wav2vec2-base: group norm over time, never trained with a mask
    "wav2vec2-group": (Wav2Vec2Config, Wav2Vec2Model, dict(feat_extract_norm="group"),
                       dict(do_normalize=True, return_attention_mask=False)),
    # like microsoft/wavlm-large: layer norm, attention masks
    "wavlm-layer": (WavLMConfig, WavLMModel,
                    dict(feat_extract_norm="layer", do_stable_layer_norm=True, num_buckets=16, max_bucket_distance=64),
                    dict(do_normalize=True, return_attention_mask=True)),
    # like facebook/hubert-large-ll60k: layer norm, masks, no waveform normalisation
    "hubert-layer": (HubertConfig, HubertModel, dict(feat_extract_norm="layer", do_stable_layer_norm=True),
                     dict(do_normalize=False, return_attention_mask=True)),
    # masks, but stacked positional convs leak padding: must run unpadded
    "data2vec-audio": (Data2VecAudioConfig, Data2VecAudioModel, dict(num_conv_pos_embeddings=3, conv_pos_kernel_size=5),
                       dict(do_normalize=True, return_attention_mask=True)),
}
#: 0.3 s to 5 s, odd lengths, two pairs of equal lengths and some within padding slack of each other.
PARITY_LENGTHS = [4801, 80000 - 13, 23457, 40001, 23457, 7919 * 3, 32001, 31013, 40001, 4801 + 320]


def save_tiny(folder: Path, name: str, seed: int = 0) -> Path:
    """Write a tiny random model of family ``name`` and its feature extractor to ``folder``."""
    config_cls, model_cls, overrides, fe = MODELS[name]
    torch.manual_seed(seed)
    model_cls(config_cls(**{**COMMON, **overrides})).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=SR, **fe).save_pretrained(folder)
    return folder


def clips(lengths: list[int], seed: int = 0) -> list[np.ndarray]:
    """Seeded test audio: alternating noise, sine, chirp (+ DC offset, so normalisation matters)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(lengths):
        t = np.arange(n) / SR
        kind = i % 3
        x = (0.3 * rng.standard_normal(n) if kind == 0 else
             0.5 * np.sin(2 * np.pi * 440 * t) if kind == 1 else
             0.4 * np.sin(2 * np.pi * (200 + 900 * t) * t))
        out.append((x + 0.1 * (i % 2)).astype(np.float32))
    return out


def batch(xs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad clips into ``(n, S)`` float32 plus ``(n,)`` int64 lengths (garbage, not zeros, in the pad)."""
    lengths = np.array([len(x) for x in xs], np.int64)
    audio = np.full((len(xs), int(lengths.max())), 0.7, np.float32)
    for i, x in enumerate(xs):
        audio[i, : len(x)] = x
    return audio, lengths


@functools.cache
def reference_model(folder: Path) -> tuple[Wav2Vec2FeatureExtractor, torch.nn.Module]:
    return Wav2Vec2FeatureExtractor.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()


def reference(folder: Path, x: np.ndarray, output_hidden_states: bool = False):
    """transformers on one unpadded clip: the output of ``model(**extractor(x))``."""
    fe, model = reference_model(folder)
    inputs = fe(x, sampling_rate=SR, return_tensors="pt")
    with torch.inference_mode():
        return model(**inputs, output_hidden_states=output_hidden_states)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("RETRIEVE_WAV2VEC2_MODEL", raising=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and then do not fight other jobs for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("w2v")
    return {name: save_tiny(root / name, name) for name in MODELS}


def encoder(folder: Path, **kwargs) -> Wav2Vec2Encoder:
    return Wav2Vec2Encoder(EncoderOptions(model=str(folder), **kwargs))


# -- loading and the contract --------------------------------------------------------------


def test_loads_through_registry(tiny: dict[str, Path]) -> None:
    enc = build("wav2vec2", model=str(tiny["wav2vec2-group"]))
    assert isinstance(enc, Wav2Vec2Encoder) and isinstance(enc, Encoder)
    assert (enc.sample_rate, enc.dim, enc.has_text) == (SR, 32, False)
    assert (enc.name, enc.default_model, enc.default_pooling) == ("wav2vec2", "facebook/wav2vec2-base", "mean")
    assert (enc.default_window_s, enc.default_hop_s) == (10.0, 5.0)
    assert not enc.model.training
    r = enc.recipe()
    assert r["checkpoint"] == str(tiny["wav2vec2-group"]) and r["revision"] is None
    assert (r["model_type"], r["layer"], r["num_layers"]) == ("wav2vec2", "last", N_LAYERS)
    assert (r["do_normalize"], r["return_attention_mask"], r["feat_extract_norm"]) == (True, False, "group")
    assert (r["frame_s"], r["frame_hop_s"]) == (0.025, 0.02)
    with pytest.raises(EncoderError, match="no text tower"):
        enc.text_embeddings(["a dog barking"])


@pytest.mark.parametrize("name", list(MODELS))
def test_family_settings(tiny: dict[str, Path], name: str) -> None:
    enc = encoder(tiny[name])
    fe = MODELS[name][3]
    assert enc.recipe()["model_type"] == MODELS[name][0].model_type
    assert (enc.do_normalize, enc.return_attention_mask) == (fe["do_normalize"], fe["return_attention_mask"])
    assert enc.pad_within_groups == (name != "data2vec-audio")


def test_env_var_names_default_checkpoint(tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRIEVE_WAV2VEC2_MODEL", str(tiny["wavlm-layer"]))
    assert Wav2Vec2Encoder().recipe()["model_type"] == "wavlm"


def test_hub_id_from_cache_records_revision(tiny: dict[str, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--tiny-org--tiny-w2v"
    shutil.copytree(tiny["wav2vec2-group"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # what a user sets; read at lookup time
    enc = encoder("tiny-org/tiny-w2v")
    assert enc.recipe()["checkpoint"] == "tiny-org/tiny-w2v" and enc.recipe()["revision"] == commit


def test_missing_hub_id_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   network_attempts: list[tuple]) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as err:
        encoder("nobody-here/no-such-wav2vec2")
    assert network_attempts == []  # offline: nothing waited on the network
    assert "--model" in str(err.value) and "RETRIEVE_WAV2VEC2_MODEL" in str(err.value)


def test_missing_local_path_and_bad_folders(tiny: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="--model"):
        encoder(tmp_path / "nowhere")
    bare = tmp_path / "no-extractor"
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(**COMMON)).save_pretrained(bare)
    with pytest.raises(EncoderError, match="Wav2Vec2FeatureExtractor"):
        encoder(bare)


def test_bad_options(tiny: dict[str, Path]) -> None:
    with pytest.raises(UnknownNameError, match="fp32"):
        encoder(tiny["wav2vec2-group"], precision="fp8")
    with pytest.raises(InputError, match="--device"):
        encoder(tiny["wav2vec2-group"], device="toaster")


@pytest.mark.parametrize("name", ["wav2vec2-group", "wavlm-layer"])
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_fast_precisions_close_to_fp32(tiny: dict[str, Path], name: str, precision: str) -> None:
    audio, lengths = batch(clips([20000, 30011, 9000]))
    vecs = []
    for p in ("fp32", precision):
        frames = encoder(tiny[name], precision=p).frame_embeddings(audio, lengths)
        assert frames.embeddings.dtype == np.float32
        vecs.append(pool_windows(frames.embeddings, frames.mask, "mean")[0])
    assert cosine(*vecs).min() > 0.99, f"{precision}: cosine to fp32 {cosine(*vecs)}"


def test_nan_input_rejected(tiny: dict[str, Path]) -> None:
    audio, lengths = batch(clips([8000, 9000]))
    audio[1, 10] = np.nan
    with pytest.raises(InputError, match="NaN"):
        encoder(tiny["wav2vec2-group"]).frame_embeddings(audio, lengths)


# -- numerics --------------------------------------------------------------------------------


def test_normalise_matches_feature_extractor() -> None:
    x = clips([12345])[0] * 3 + 0.25
    expected = Wav2Vec2FeatureExtractor(do_normalize=True)(x, sampling_rate=SR)["input_values"][0]
    np.testing.assert_array_equal(normalise(x), expected)


@pytest.mark.parametrize("name", list(MODELS))
def test_parity_with_transformers(tiny: dict[str, Path], name: str) -> None:
    xs = clips(PARITY_LENGTHS)
    audio, lengths = batch(xs)
    frames = encoder(tiny[name]).frame_embeddings(audio, lengths)
    pooled, counts = pool_windows(frames.embeddings, frames.mask, "mean")
    ref = [reference(tiny[name], x).last_hidden_state[0].numpy() for x in xs]
    assert counts.tolist() == [len(r) for r in ref]
    for i, r in enumerate(ref):
        np.testing.assert_allclose(frames.embeddings[i, : len(r)], r, atol=1e-5, rtol=0)
    cos = cosine(pooled, np.stack([r.mean(0) for r in ref]))
    assert cos.min() >= 0.999, f"min cosine {cos.min():.6f}"


@pytest.mark.parametrize("name", list(MODELS))
def test_batch_invariance(tiny: dict[str, Path], name: str) -> None:
    enc = encoder(tiny[name])
    xs = clips([40001, 40001, 39000, 36017, 20000, 5000, 41234], seed=3)
    alone = [enc.frame_embeddings(*batch([x])) for x in xs]
    order = [6, 2, 0, 5, 3, 1, 4]
    together = enc.frame_embeddings(*batch([xs[i] for i in order]))
    for row, i in enumerate(order):
        t = int(alone[i].mask.sum())
        assert together.mask[row].sum() == t and together.mask[row, :t].all()
        np.testing.assert_allclose(together.embeddings[row, :t], alone[i].embeddings[0, :t], atol=1e-5, rtol=0)
        np.testing.assert_array_equal(together.times_s[row, :t], alone[i].times_s[0, :t])


def test_padding_would_change_group_norm_model(tiny: dict[str, Path]) -> None:
    """Control for the test above: plain padded batching moves wav2vec2-base-like frames a lot."""
    fe, model = reference_model(tiny["wav2vec2-group"])
    short, long = clips([20000, 40001])
    alone = reference(tiny["wav2vec2-group"], short).last_hidden_state[0]
    padded = fe([short, long], sampling_rate=SR, padding=True, return_tensors="pt")
    with torch.inference_mode():
        together = model(padded["input_values"]).last_hidden_state[0, : len(alone)]
    assert (together - alone).abs().max() > 1e-2


def test_frame_times_mask_and_short_rows(tiny: dict[str, Path]) -> None:
    enc = encoder(tiny["wav2vec2-group"])
    assert (enc.hop_samples, enc.frame_samples) == (320, 400)
    xs = clips([16000, 399, 400, 1000])
    out = enc.frame_embeddings(*batch(xs))
    assert out.embeddings.dtype == np.float32 and out.times_s.dtype == np.float64
    assert out.mask.sum(1).tolist() == [49, 0, 1, 2]  # (n - 400) // 320 + 1
    np.testing.assert_allclose(out.times_s[0, :3], [0.0125, 0.0325, 0.0525])
    assert not out.embeddings[1].any()
    pooled, counts = pool_windows(out.embeddings, out.mask, "mean")
    assert counts[1] == 0 and not pooled[1].any()
    empty = enc.frame_embeddings(*batch(clips([100, 200])))
    assert empty.embeddings.shape == (2, 0, 32)


def test_conv_geometry_is_derived() -> None:
    assert conv_geometry((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)) == (320, 400)
    assert conv_geometry((10, 4), (5, 3)) == (15, 25)


def test_plan_groups() -> None:
    lengths = np.array([100, 90, 100, 50, 95, 100, 49])
    exact = plan_groups(lengths, pad=False)
    assert [sorted(lengths[g].tolist()) for g in exact] == [[100, 100, 100], [95], [90], [50], [49]]
    padded = plan_groups(lengths, pad=True)
    assert sorted(np.concatenate(padded).tolist()) == list(range(7))
    for g in padded:
        assert len(g) * lengths[g].max() <= 1.25 * lengths[g].sum()
    assert [len(g) for g in padded] == [7]  # 700 padded samples for 584 valid: within 25 %
    short = np.array([10, 100, 9, 100])
    assert [short[g].tolist() for g in plan_groups(short, pad=True)] == [[100, 100], [10, 9]]
    capped = plan_groups(lengths, pad=False, max_samples=200)
    assert [len(g) for g in capped] == [2, 1, 1, 1, 1, 1]


# -- layers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wav2vec2-group", "wavlm-layer"])
def test_layers_match_hidden_states(tiny: dict[str, Path], name: str) -> None:
    xs = clips([23457, 16001])
    audio, lengths = batch(xs)
    refs = [reference(tiny[name], x, output_hidden_states=True) for x in xs]
    cases = {"0": lambda r: r.hidden_states[0], "1": lambda r: r.hidden_states[1],
             str(N_LAYERS): lambda r: r.hidden_states[N_LAYERS], "last": lambda r: r.last_hidden_state,
             "mean": lambda r: torch.stack(r.hidden_states).mean(0)}
    for layer, pick in cases.items():
        enc = encoder(tiny[name], layer=layer)
        out = enc.frame_embeddings(audio, lengths)
        for i, r in enumerate(refs):
            expected = pick(r)[0].numpy()
            np.testing.assert_allclose(out.embeddings[i, : len(expected)], expected, atol=1e-5, rtol=0,
                                       err_msg=f"layer {layer}")
    assert encoder(tiny[name], layer="1").recipe()["layer"] == 1
    assert encoder(tiny[name], layer="mean").recipe()["layer"] == "mean"


def test_layer_out_of_range(tiny: dict[str, Path]) -> None:
    for bad in ("4", "-1", "middle"):
        with pytest.raises(InputError, match=r"0\.\.3"):
            encoder(tiny["wav2vec2-group"], layer=bad)


def test_layer_frames_reads_every_layer(tiny: dict[str, Path]) -> None:
    audio, lengths = batch(clips([20000, 12000]))
    every = encoder(tiny["hubert-layer"]).layer_frames(audio, lengths)
    assert len(every) == N_LAYERS + 1
    one = encoder(tiny["hubert-layer"], layer="1")
    np.testing.assert_allclose(every[1].embeddings, one.frame_embeddings(audio, lengths).embeddings, atol=1e-5)
    with pytest.raises(EncoderError, match="--layer last"):
        one.layer_frames(audio, lengths)


def test_snapshot_revision(tmp_path: Path) -> None:
    commit = "ab" * 20
    assert snapshot_revision(str(tmp_path / "models--a--b" / "snapshots" / commit)) == commit
    assert snapshot_revision(str(tmp_path)) is None
