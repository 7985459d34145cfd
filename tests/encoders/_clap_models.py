"""Tiny random CLAP checkpoints for tests, built locally with no network.

Each checkpoint is a folder written by ``save_pretrained`` (config, weights, the
``ClapFeatureExtractor`` and a byte-level BPE ``RobertaTokenizer`` made from a vocabulary
written here), so tests load it through the same path a real hub snapshot takes.

The audio front end keeps the real checkpoint's settings (48 kHz, 10 s, 64 mel bands,
``spec_size`` 256: HTSAT needs ``spec_size * (spec_size // 64) >= 1001`` frames), and
the towers are made as small as HTSAT allows: two Swin stages of width 8 and 16.

Checkpoints are built once per test session and cached by kind.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np

#: Special tokens in RoBERTa's order (ids 0..3), then the mask token after the bytes.
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]

_BUILT: dict[str, Path] = {}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (256 entries)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tiny_tokenizer(folder: Path) -> int:
    """Write ``vocab.json`` and ``merges.txt`` for a byte-level BPE; returns the vocabulary size."""
    alphabet = sorted(bytes_to_unicode().values())
    merges = [("t", "h"), ("th", "e"), ("Ġ", "a"), ("o", "u"), ("ou", "n"), ("oun", "d"), ("Ġ", "s")]
    tokens = SPECIALS + alphabet + ["".join(m) for m in merges] + ["<mask>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n"
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")
    return len(vocab)


def tiny_config(vocab_size: int, *, fusion: bool = False, projection_dim: int = 16) -> Any:
    """A ``ClapConfig`` with the real front end and the smallest towers that run."""
    from transformers import ClapConfig

    audio = dict(
        spec_size=256, num_mel_bins=64, patch_size=4, patch_stride=[4, 4], window_size=8,
        depths=[1, 1], num_attention_heads=[1, 2], patch_embeds_hidden_size=8, hidden_size=16,
        enable_fusion=fusion, fusion_type="aff_2d" if fusion else None, aff_block_r=2,
    )
    text = dict(
        vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=24, max_position_embeddings=66,
    )
    return ClapConfig(text_config=text, audio_config=audio, projection_dim=projection_dim)


def build_tiny_clap(folder: Path, *, fusion: bool = False, seed: int = 0) -> Path:
    """Save a random tiny ``ClapModel`` with its processor into ``folder`` and return it.

    Batch-norm running statistics are randomised too, so the audio batch norm is not
    the identity and a wrong feature scale would show.
    """
    import torch
    from transformers import ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tok_dir = folder.parent / f"{folder.name}_tokenizer_src"  # not part of the checkpoint
    vocab_size = write_tiny_tokenizer(tok_dir)
    files = {"vocab": str(tok_dir / "vocab.json"), "merges": str(tok_dir / "merges.txt")}
    if "vocab_file" in inspect.signature(RobertaTokenizer.__init__).parameters:  # transformers 4.x
        files = {"vocab_file": files["vocab"], "merges_file": files["merges"]}
    tokenizer = RobertaTokenizer(**files, model_max_length=64)
    extractor = ClapFeatureExtractor(truncation="fusion" if fusion else "rand_trunc", frequency_min=50,
                                     frequency_max=14000, padding="repeatpad")
    torch.manual_seed(seed)
    model = ClapModel(tiny_config(vocab_size, fusion=fusion)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                mel = module is model.audio_model.audio_encoder.batch_norm  # sees dB values
                module.running_mean.uniform_(-60.0, -20.0) if mel else module.running_mean.normal_()
                module.running_var.uniform_(50.0, 400.0) if mel else module.running_var.uniform_(0.5, 2.0)
        model.logit_scale_a.fill_(float(np.log(20.0)))
    model.save_pretrained(folder)
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def tiny_clap(tmp_path_factory: Any, *, fusion: bool = False) -> Path:
    """The session's tiny checkpoint of one kind (unfused or fused), built on first use."""
    key = "fused" if fusion else "unfused"
    if key not in _BUILT:
        _BUILT[key] = build_tiny_clap(tmp_path_factory.mktemp(f"tiny_clap_{key}"), fusion=fusion)
    return _BUILT[key]


def clap_clips(seconds: list[float], sample_rate: int = 48000, seed: int = 0) -> list[np.ndarray]:
    """Seeded float32 mono clips of the given lengths: a chirp plus noise, scaled to +-0.5."""
    rng = np.random.default_rng(seed)
    clips = []
    for i, s in enumerate(seconds):
        n = max(1, int(round(s * sample_rate)))
        t = np.arange(n) / sample_rate
        chirp = np.sin(2 * np.pi * (200 + 300 * i) * t * (1 + t))
        clips.append((0.3 * chirp + 0.2 * rng.standard_normal(n)).astype(np.float32))
    return clips


def set_offline(mp: Any) -> None:
    """Switch the hub off on a ``pytest.MonkeyPatch``: tests must never touch the network."""
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    mp.delenv("RETRIEVE_CLAP_MODEL", raising=False)


def padded(xs: list[np.ndarray], extra: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(n, max_len + extra)`` zero-padded float32 batch and ``(n,)`` int64 lengths."""
    lengths = np.array([len(x) for x in xs], np.int64)
    out = np.zeros((len(xs), int(lengths.max()) + extra), np.float32)
    for i, x in enumerate(xs):
        out[i, : len(x)] = x
    return out, lengths
