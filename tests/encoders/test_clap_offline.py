"""With no checkpoint and no network, CLAP fails fast with the three ways to get weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.encoders import build
from retrieval.encoders.base import EncoderOptions
from retrieval.errors import WeightsNotFoundError

UNCACHED = "retrieve-tests/no-such-clap-checkpoint"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, network_attempts: list[tuple]) -> list[tuple]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("RETRIEVE_CLAP_MODEL", raising=False)
    return network_attempts


def _fails_fast(options: EncoderOptions, attempts: list[tuple]) -> str:
    """The error of building CLAP with ``options``; fast means no network attempt at all (offline)."""
    with pytest.raises(WeightsNotFoundError) as info:
        build("clap", options)
    assert attempts == []
    return str(info.value)


def test_uncached_hub_id_fails_fast_with_the_fix(_offline: list[tuple]) -> None:
    msg = _fails_fast(EncoderOptions(model=UNCACHED), _offline)
    assert UNCACHED in msg and "HF_HUB_OFFLINE is set, so no download was tried" in msg
    assert "--model /path/to/checkpoint" in msg and "RETRIEVE_CLAP_MODEL" in msg and "huggingface" in msg


def test_env_var_names_the_checkpoint(monkeypatch: pytest.MonkeyPatch, _offline: list[tuple]) -> None:
    monkeypatch.setenv("RETRIEVE_CLAP_MODEL", UNCACHED)
    assert UNCACHED in _fails_fast(EncoderOptions(), _offline)


def test_missing_local_paths_fail_fast(tmp_path: Path, _offline: list[tuple]) -> None:
    for missing in (tmp_path / "clap-folder", tmp_path / "music_clap.pt"):
        msg = _fails_fast(EncoderOptions(model=str(missing)), _offline)
        assert str(missing) in msg and "--model" in msg


def test_laion_file_without_a_processor_source_fails_fast(tmp_path: Path, _offline: list[tuple]) -> None:
    import torch

    pt = tmp_path / "laion.pt"
    sd = {"audio_branch.bn0.weight": torch.ones(64), "text_branch.pooler.dense.bias": torch.ones(4)}
    torch.save({"state_dict": sd}, pt)
    msg = _fails_fast(EncoderOptions(model=str(pt), extra={"processor": UNCACHED}), _offline)
    assert UNCACHED in msg
