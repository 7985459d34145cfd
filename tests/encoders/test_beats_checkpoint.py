"""Finding, reading and checking BEATs checkpoints; the fine-tuned AudioSet head."""

from __future__ import annotations

import pathlib
from pathlib import Path

import numpy as np
import pytest
import torch

from retrieval.encoders.base import EncoderOptions
from retrieval.encoders.beats import BeatsConfig, BeatsEncoder
from retrieval.errors import EncoderError, InputError, WeightsNotFoundError

pytestmark = pytest.mark.usefixtures("torch_single_thread")


class _TouchOnUnpickle:
    """Unpickling this object creates a file: a harmless stand-in for pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _load(path: Path, **kwargs) -> BeatsEncoder:
    return BeatsEncoder(EncoderOptions(model=str(path), **kwargs))


def _rewrite(source: Path, target: Path, edit) -> Path:
    blob = torch.load(source, weights_only=True)
    edit(blob)
    torch.save(blob, target)
    return target


# -- missing weights -------------------------------------------------------------------------

def test_missing_default_checkpoint_fails_fast_with_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            network_attempts: list[tuple]) -> None:
    monkeypatch.delenv("RETRIEVE_BEATS_MODEL", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # even when downloads are allowed, BEATs never tries one
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsNotFoundError) as info:
        BeatsEncoder(EncoderOptions())
    assert network_attempts == []
    message = str(info.value)
    assert "BEATs_iter3_plus_AS2M.pt" in message
    assert "--model /path/to/BEATs_iter3_plus_AS2M.pt" in message
    assert "RETRIEVE_BEATS_MODEL" in message
    assert "microsoft/unilm" in message and "beats" in message


def test_missing_path_and_env_var(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_beats_checkpoint) -> None:
    with pytest.raises(WeightsNotFoundError, match="nowhere.pt"):
        _load(tmp_path / "nowhere.pt")
    with pytest.raises(WeightsNotFoundError, match="folder"):
        _load(tmp_path)
    monkeypatch.setenv("RETRIEVE_BEATS_MODEL", str(tmp_path / "from_env.pt"))
    with pytest.raises(WeightsNotFoundError, match="from_env.pt"):
        BeatsEncoder(EncoderOptions())
    path = tiny_beats_checkpoint(seed=2)
    monkeypatch.setenv("RETRIEVE_BEATS_MODEL", str(path))
    assert BeatsEncoder(EncoderOptions()).checkpoint.path == path


# -- safe, strict loading ----------------------------------------------------------------------

def test_pickled_code_is_refused_and_never_runs(tmp_path: Path, tiny_beats_checkpoint) -> None:
    marker = tmp_path / "pwned"
    path = _rewrite(tiny_beats_checkpoint(seed=3), tmp_path / "evil.pt",
                    lambda blob: blob.__setitem__("payload", _TouchOnUnpickle(marker)))
    with pytest.raises(EncoderError, match="weights_only") as info:
        _load(path)
    assert "re-save" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(("edit", "match"), [
    (lambda blob: blob.pop("cfg"), "expected a dict with 'cfg' and 'model'"),
    (lambda blob: blob["model"].pop("encoder.layer_norm.bias"), "Missing key"),
    (lambda blob: blob["model"].__setitem__("extra.weight", torch.zeros(1)), "Unexpected key"),
    (lambda blob: blob["model"].__setitem__("layer_norm.weight", torch.zeros(3)), "size mismatch"),
    (lambda blob: blob["cfg"].__setitem__("layer_norm_first", True), "layer_norm_first"),
    (lambda blob: blob["cfg"].__setitem__("input_patch_size", -1), "input_patch_size"),
])
def test_malformed_checkpoints_are_typed_errors(tmp_path: Path, tiny_beats_checkpoint, edit, match: str) -> None:
    path = _rewrite(tiny_beats_checkpoint(seed=3), tmp_path / "bad.pt", edit)
    with pytest.raises(EncoderError, match=match):
        _load(path)


def test_relative_position_tables_must_agree(tmp_path: Path, tiny_beats_checkpoint) -> None:
    def edit(blob):
        key = "encoder.layers.1.self_attn.relative_attention_bias.weight"
        blob["model"][key] = blob["model"][key].clone() + 1.0
    path = _rewrite(tiny_beats_checkpoint(seed=3), tmp_path / "tables.pt", edit)
    with pytest.raises(EncoderError, match="shares one"):
        _load(path)


def test_truncated_file_is_a_typed_error(tmp_path: Path, tiny_beats_checkpoint) -> None:
    data = tiny_beats_checkpoint(seed=3).read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EncoderError, match="cannot read"):
        _load(path)


def test_config_comes_from_the_checkpoint_not_the_class_defaults() -> None:
    # Official class defaults differ from the released models (README section 3).
    defaults = BeatsConfig()
    assert (defaults.max_distance, defaults.deep_norm, defaults.gru_rel_pos) == (1280, False, False)
    cfg = BeatsConfig.from_dict({"input_patch_size": 16, "max_distance": 800, "deep_norm": True,
                                 "gru_rel_pos": True, "relative_position_embedding": True, "new_field": 1})
    assert (cfg.max_distance, cfg.deep_norm, cfg.deep_norm_alpha) == (800, True, pytest.approx(24 ** 0.25))
    assert cfg.extra == {"new_field": 1} and cfg.to_dict()["new_field"] == 1


# -- the fine-tuned AudioSet head --------------------------------------------------------------

@pytest.fixture(scope="module")
def finetuned_path(tiny_beats_checkpoint) -> Path:
    return tiny_beats_checkpoint(seed=4, finetuned_model=True, predictor_dropout=0.0,
                                 label_dict={i: f"/m/{i:04d}" for i in range(527)})


def test_finetuned_checkpoint_gives_audioset_probabilities(finetuned_path: Path) -> None:
    encoder = _load(finetuned_path)
    assert encoder.model.predictor is not None and encoder.model.predictor.out_features == 527
    rng = np.random.RandomState(0)
    audio = (0.3 * rng.randn(3, 20000)).astype(np.float32)
    lengths = np.array([20000, 9000, 1500])
    probs = encoder.class_probabilities(audio, lengths)
    assert probs.shape == (3, 527) and probs.dtype == np.float32
    assert ((probs > 0) & (probs < 1)).all()
    # sigmoid of the predictor over the clip's tokens, each clip alone
    for i in range(3):
        wave = np.zeros((1, max(lengths[i], 2800)), np.float32)
        wave[0, : lengths[i]] = audio[i, : lengths[i]]
        with torch.inference_mode():
            tokens = encoder.model.extract_features(torch.from_numpy(wave)).output[0]
            manual = torch.sigmoid(encoder.model.predictor(tokens.mean(0))).numpy()
        np.testing.assert_allclose(probs[i], manual, rtol=0, atol=1e-5)
    # frame embeddings still come from the encoder, not the head
    assert encoder.frame_embeddings(audio, lengths).embeddings.shape[-1] == encoder.dim == 32


def test_top_classes_labels(finetuned_path: Path, tmp_path: Path) -> None:
    encoder = _load(finetuned_path)
    audio = (0.3 * np.random.RandomState(1).randn(1, 8000)).astype(np.float32)
    lengths = np.array([8000])
    probs = encoder.class_probabilities(audio, lengths)[0]
    best = encoder.top_classes(audio, lengths, k=3)[0]
    assert [label for label, _ in best] == [f"/m/{i:04d}" for i in np.argsort(-probs)[:3]]
    assert [p for _, p in best] == sorted((p for _, p in best), reverse=True)
    names = [f"class {i}" for i in range(527)]
    assert encoder.top_classes(audio, lengths, k=1, label_names=names)[0][0][0] == f"class {np.argmax(probs)}"
    with pytest.raises(InputError, match="one name per class"):
        encoder.top_classes(audio, lengths, label_names=names[:10])
    # without label_dict: class indices
    unlabelled = _rewrite(finetuned_path, tmp_path / "nolabels.pt", lambda blob: blob.pop("label_dict"))
    plain = _load(unlabelled)
    assert plain.labels is None
    assert plain.top_classes(audio, lengths, k=1)[0][0][0] == int(np.argmax(probs))


def test_pretrained_checkpoint_has_no_head(tiny_beats_checkpoint) -> None:
    encoder = _load(tiny_beats_checkpoint(seed=5))
    with pytest.raises(InputError, match="fine-tuned"):
        encoder.class_probabilities(np.zeros((1, 4000), np.float32), np.array([4000]))
