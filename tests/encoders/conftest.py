"""Shared fixtures for encoder tests.

Golden reference data lives outside the repository, in ``<repo>/../shared/golden``;
tests that need it skip cleanly when it is absent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

#: ``<repo>/../shared/golden`` (this file is ``<repo>/tests/encoders/conftest.py``).
GOLDEN_ROOT = (Path(__file__).resolve().parents[2] / ".." / "shared" / "golden").resolve()


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The shared golden folder; skips the test when it is absent."""
    if not GOLDEN_ROOT.is_dir():
        pytest.skip(f"golden reference data not found at {GOLDEN_ROOT}")
    return GOLDEN_ROOT


@pytest.fixture(scope="session")
def beats_golden(golden_dir: Path) -> Path:
    """``golden/beats`` (official-code outputs for random BEATs weights); skips when absent."""
    path = golden_dir / "beats"
    if not (path / "expected_small.npz").is_file():
        pytest.skip(f"BEATs golden files not found in {path}")
    return path


@pytest.fixture(scope="session")
def tiny_beats_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: write a tiny random BEATs checkpoint in the official format and return its path.

    Keyword arguments override fields of the tiny config (2 layers, D=32, 4 heads, E=16),
    e.g. ``finetuned_model=True``; ``label_dict`` adds that key to the file.
    """
    import torch

    from retrieval.encoders.beats import BeatsConfig, BeatsModel

    def make(seed: int = 0, label_dict: dict[int, str] | None = None, **overrides: Any) -> Path:
        cfg = {
            "input_patch_size": 16, "embed_dim": 16, "conv_bias": False, "encoder_layers": 2,
            "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 4,
            "activation_fn": "gelu", "layer_wise_gradient_decay_ratio": 0.6, "layer_norm_first": False,
            "deep_norm": True, "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
            "encoder_layerdrop": 0.05, "dropout_input": 0.0, "conv_pos": 128, "conv_pos_groups": 16,
            "relative_position_embedding": True, "num_buckets": 320, "max_distance": 800,
            "gru_rel_pos": True, "finetuned_model": False, "predictor_dropout": 0.1, "predictor_class": 527,
            **overrides,
        }
        torch.manual_seed(seed)
        model = BeatsModel(BeatsConfig.from_dict(cfg))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("weight_v"):
                    p.normal_(0.0, 1.0)
                elif p.ndim > 1 and not name.endswith(("weight_g", "grep_a")):
                    p.normal_(0.0, p[0].numel() ** -0.5)
                elif not name.endswith(("weight_g", "grep_a")):
                    p.normal_(0.0 if name.endswith("bias") else 1.0, 0.1)
                if "relative_attention_bias" in name:
                    p.normal_(0.0, 0.5)
        blob: dict[str, Any] = {"cfg": cfg, "model": model.state_dict()}
        if label_dict is not None:
            blob["label_dict"] = label_dict
        path = tmp_path_factory.mktemp("beats") / f"tiny_{seed}.pt"
        torch.save(blob, path)
        return path

    return make


@pytest.fixture(scope="module")
def torch_single_thread() -> Iterator[None]:
    """Run a module's tests with one torch thread, then restore the previous count.

    Tiny models spend their time in many small ops; with two OpenMP threads on a shared,
    oversubscribed machine every op ends in a spin-wait barrier, which made such tests
    50x slower. Results change only by float32 rounding (golden README: <= 4.8e-6).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory,
                tiny_beats_checkpoint: Callable[..., Path]) -> dict[str, str | None]:
    """Registered encoder name -> ``--model`` of a tiny random checkpoint (None: no weights).

    Every registered encoder needs an entry here: the contract test runs over the registry.
    wav2vec2: 2 layers, D=32, 2 positional-conv groups; BEATs: ``tiny_beats_checkpoint(seed=1)``;
    CLAP: the unfused tiny checkpoint of ``_clap_models``.
    """
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    try:
        from tests.encoders._clap_models import tiny_clap
    except ImportError:  # pytest run without the repository root on sys.path
        from _clap_models import tiny_clap  # type: ignore[no-redef]

    w2v = tmp_path_factory.mktemp("w2v")
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="group",
    )).eval().save_pretrained(w2v)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=False).save_pretrained(w2v)
    return {"logmel": None, "wav2vec2": str(w2v), "beats": str(tiny_beats_checkpoint(seed=1)),
            "clap": str(tiny_clap(tmp_path_factory))}


@pytest.fixture(scope="module")
def offline_one_thread() -> Iterator[None]:
    """No hub, no checkpoint from the environment, one torch thread (tiny models are fastest
    so on a shared machine). Modules take it with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    from retrieval import encoders

    try:
        from tests.encoders._clap_models import set_offline
    except ImportError:  # run from inside tests/encoders
        from _clap_models import set_offline  # type: ignore[no-redef]

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        set_offline(mp)
        for name in encoders.names():
            mp.delenv(f"RETRIEVE_{name.upper()}_MODEL", raising=False)
        yield
    torch.set_num_threads(before)
