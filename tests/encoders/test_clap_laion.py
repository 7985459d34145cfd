"""LAION-CLAP ``.pt`` checkpoints load through the key mapping and give the same vectors.

A tiny transformers ClapModel is written back into LAION's layout (``module.`` prefix,
``state_dict`` wrapper, fused ``qkv``, ``Sequential`` projections, plus the in-model
spectrogram tensors LAION files carry), saved as ``.pt``, and loaded through
``ClapEncoder(EncoderOptions(model="x.pt", extra={"processor": folder}))``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from transformers import ClapConfig, ClapModel  # noqa: E402

try:
    from tests.encoders._clap_models import clap_clips, padded, set_offline, tiny_clap
except ImportError:  # pytest run without the repository root on sys.path
    from _clap_models import clap_clips, padded, set_offline, tiny_clap  # type: ignore[no-redef]

from retrieval.encoders.base import EncoderOptions  # noqa: E402
from retrieval.encoders.clap import ClapEncoder  # noqa: E402
from retrieval.encoders.clap import laion_convert  # noqa: E402
from retrieval.errors import EncoderError  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _offline() -> None:
    with pytest.MonkeyPatch.context() as mp:
        set_offline(mp)
        yield


def laion_checkpoint(folder: Path, out: Path) -> Path:
    """Write ``folder``'s weights as a LAION-style training checkpoint at ``out``."""
    model = ClapModel.from_pretrained(folder)
    sd = laion_convert.hf_to_laion(model.state_dict())
    sd["audio_branch.spectrogram_extractor.stft.conv_real.weight"] = torch.randn(513, 1, 1024)
    sd["audio_branch.logmel_extractor.melW"] = torch.randn(1025, 64)
    sd["audio_branch.head.weight"] = torch.randn(527, 16)
    sd["text_transform.sequential.0.weight"] = torch.randn(16, 16)
    sd["audio_branch.layers.0.blocks.0.attn_mask"] = torch.zeros(1)
    torch.save({"epoch": 3, "name": "tiny", "state_dict": {f"module.{k}": v for k, v in sd.items()}}, out)
    return out


def test_mapping_round_trips_every_key(tmp_path_factory: pytest.TempPathFactory) -> None:
    for fusion in (False, True):
        sd = ClapModel.from_pretrained(tiny_clap(tmp_path_factory, fusion=fusion)).state_dict()
        laion = laion_convert.hf_to_laion(sd)
        assert any(".attn.qkv." in k for k in laion) and "audio_branch.bn0.weight" in laion
        assert "audio_projection.0.weight" in laion and "text_projection.2.bias" in laion
        back = laion_convert.laion_to_hf(laion)
        skipped = {"text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids"}
        assert set(back) == set(sd) - skipped
        for k, v in back.items():
            torch.testing.assert_close(v, sd[k], rtol=0, atol=0)


def test_config_is_read_from_shapes(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tiny_clap(tmp_path_factory, fusion=True)
    own = ClapConfig.from_pretrained(folder)
    sd = laion_convert.hf_to_laion(ClapModel.from_pretrained(folder).state_dict())
    # text heads cannot be read from shapes: they come from the base config
    cfg = laion_convert.config_from_laion(sd, base=ClapConfig(text_config={"num_attention_heads": 2}))
    for field in ("patch_embeds_hidden_size", "depths", "num_attention_heads", "window_size", "hidden_size",
                  "enable_fusion", "num_mel_bins", "mlp_ratio", "aff_block_r"):
        assert getattr(cfg.audio_config, field) == getattr(own.audio_config, field), field
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "max_position_embeddings"):
        assert getattr(cfg.text_config, field) == getattr(own.text_config, field), field
    assert cfg.projection_dim == own.projection_dim


@pytest.mark.parametrize("fusion", [False, True])
def test_laion_pt_loads_to_the_same_vectors(fusion: bool, tmp_path_factory: pytest.TempPathFactory,
                                            tmp_path: Path) -> None:
    folder = tiny_clap(tmp_path_factory, fusion=fusion)
    pt = laion_checkpoint(folder, tmp_path / "tiny_laion.pt")
    from_pt = ClapEncoder(EncoderOptions(model=str(pt), extra={"processor": str(folder)}))
    from_hf = ClapEncoder(EncoderOptions(model=str(folder)))
    clips = clap_clips([0.7, 4.0, 10.0], seed=9)
    a = from_pt.frame_embeddings(*padded(clips)).embeddings
    b = from_hf.frame_embeddings(*padded(clips)).embeddings
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # A LAION .pt's text tower is roberta-base's (LayerNorm eps 1e-5); the tiny folder has
    # transformers' default 1e-12, so give the folder's model LAION's epsilon to compare.
    for module in from_hf.model.text_model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = laion_convert.LAION_TEXT["layer_norm_eps"]
    texts = ["a dog", "thunder and rain"]
    np.testing.assert_allclose(from_pt.text_embeddings(texts), from_hf.text_embeddings(texts), rtol=0, atol=1e-6)
    assert from_pt.logit_scale == pytest.approx(from_hf.logit_scale)
    recipe = from_pt.recipe()
    assert recipe["format"] == "laion" and recipe["processor"] == str(folder)
    assert recipe["front_end"]["truncation"] == ("fusion" if fusion else "rand_trunc")


def test_wrong_files_are_refused(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    folder = tiny_clap(tmp_path_factory)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"encoder.weight": torch.ones(2)}}, other)
    with pytest.raises(EncoderError, match="not a LAION-CLAP checkpoint"):
        ClapEncoder(EncoderOptions(model=str(other), extra={"processor": str(folder)}))
    broken = laion_checkpoint(folder, tmp_path / "broken.pt")
    ckpt = torch.load(broken, weights_only=True)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if "layers.1.blocks.0.mlp" not in k}
    torch.save(ckpt, broken)
    with pytest.raises(EncoderError, match="missing .*intermediate"):
        ClapEncoder(EncoderOptions(model=str(broken), extra={"processor": str(folder)}))
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": {}, "args": Path("x")}, pickled)  # an arbitrary object needs unpickling
    with pytest.raises(EncoderError, match="trust_pickle"):
        ClapEncoder(EncoderOptions(model=str(pickled), extra={"processor": str(folder)}))
