"""A LAION ``.pt``'s text tower runs as ``laion_clap`` runs it: 77 tokens, LayerNorm eps 1e-5.

The reference is ``laion_clap``'s own text path, written out from ``hook.py`` and
``clap_module/model.py``: ``RobertaTokenizer(..., padding="max_length", truncation=True,
max_length=77)``, the RoBERTa ``pooler_output``, the text projection, L2 normalisation; the
RoBERTa is ``roberta-base``'s configuration (``layer_norm_eps=1e-5``). The tiny model here
is built with that epsilon, saved in LAION's layout, and loaded back through ``ClapEncoder``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import torch.nn.functional as F  # noqa: E402
from transformers import AutoTokenizer, ClapConfig, ClapModel  # noqa: E402

from retrieval.encoders.base import EncoderOptions  # noqa: E402
from retrieval.encoders.clap import ClapEncoder, laion_convert  # noqa: E402
from tests.encoders._clap_models import set_offline, tiny_clap  # noqa: E402

LONG = "the sound of a dog barking at thunder while rain falls on a tin roof " * 6


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    set_offline(monkeypatch)


def laion_source(folder: Path, *, text_width: int = 16, text_heads: int = 2, seed: int = 5) -> ClapModel:
    """A random tiny CLAP whose text tower is configured as LAION's (eps 1e-5), 128 text positions."""
    config = ClapConfig.from_pretrained(folder)
    config.text_config.max_position_embeddings = 130
    config.text_config.layer_norm_eps = 1e-5
    config.text_config.hidden_size = text_width
    config.text_config.num_attention_heads = text_heads
    torch.manual_seed(seed)
    return ClapModel(config).eval()


def save_laion(model: ClapModel, out: Path) -> Path:
    sd = laion_convert.hf_to_laion(model.state_dict())
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, out)
    return out


def processor_folder(folder: Path, out: Path, *, with_config: bool) -> Path:
    """The tokenizer and front end of ``folder``, with the 512-token limit of the real tokenizer."""
    shutil.copytree(folder, out, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    if not with_config:
        (out / "config.json").unlink()
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    cfg["model_max_length"] = 512
    (out / "tokenizer_config.json").write_text(json.dumps(cfg))
    return out


def official_text(model: ClapModel, tokenizer, texts: list[str], max_length: int = 77) -> np.ndarray:
    """``laion_clap``'s ``get_text_embedding`` on ``model`` (see the module docstring)."""
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        pooled = model.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output
        return F.normalize(model.text_projection(pooled), dim=-1).numpy()


def test_long_text_is_cut_at_77_tokens(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    folder = tiny_clap(tmp_path_factory)
    source = laion_source(folder)
    processor = processor_folder(folder, tmp_path / "processor", with_config=True)
    tokenizer = AutoTokenizer.from_pretrained(processor)
    assert len(tokenizer(LONG)["input_ids"]) > 128  # longer than 77 and than the model's 128 positions
    expected = official_text(source, tokenizer, [LONG, "a dog"])
    cut_later = official_text(source, tokenizer, [LONG], max_length=128)
    assert 1 - float(expected[0] @ cut_later[0]) > 1e-4  # where the text is cut shows in the vector

    enc = ClapEncoder(EncoderOptions(model=str(save_laion(source, tmp_path / "m.pt")),
                                     extra={"processor": str(processor)}))
    assert enc.max_text_tokens == 77
    np.testing.assert_allclose(enc.text_embeddings([LONG, "a dog"]), expected, rtol=0, atol=2e-6)


def test_text_layer_norm_eps_is_laions_without_a_config(tmp_path_factory: pytest.TempPathFactory,
                                                        tmp_path: Path) -> None:
    folder = tiny_clap(tmp_path_factory)
    # no config.json next to the tokenizer: shapes plus transformers' ClapConfig() defaults (12 text heads)
    source = laion_source(folder, text_width=48, text_heads=12)
    processor = processor_folder(folder, tmp_path / "processor", with_config=False)
    tokenizer = AutoTokenizer.from_pretrained(processor)
    texts = ["a dog", "thunder and rain on a roof"]
    expected = official_text(source, tokenizer, texts)
    for module in source.text_model.modules():  # the same weights with transformers' default eps
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e-12
    assert np.abs(official_text(source, tokenizer, texts) - expected).max() > 1e-4  # the epsilon shows

    enc = ClapEncoder(EncoderOptions(model=str(save_laion(laion_source(folder, text_width=48, text_heads=12),
                                                          tmp_path / "m.pt")),
                                     extra={"processor": str(processor)}))
    assert enc.model.config.text_config.layer_norm_eps == 1e-5
    np.testing.assert_allclose(enc.text_embeddings(texts), expected, rtol=0, atol=2e-6)
