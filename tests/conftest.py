"""Shared fixtures: isolated index folders, offline hub, seeded audio files, the FSDD corpus."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from retrieval import synth

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RETRIEVE_SHARED") or REPO.parent / "shared")  # a worktree elsewhere: point at it
FSDD = SHARED / "data" / "fsdd"


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test touches the real indexes/ folder or the network."""
    monkeypatch.setenv("RETRIEVE_INDEXES", str(tmp_path_factory.mktemp("indexes")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every name lookup or TCP connect the code under test tries, each refused with OSError.

    "Fails fast" is then a count, not a stopwatch: a test asserts the list stays empty
    (nothing waited on the network) or holds exactly the probes it expects.
    """
    attempts: list[tuple] = []

    def refuse(what: str):
        def call(*args, **kwargs):
            attempts.append((what, args[0] if args else kwargs))
            raise OSError(f"network refused by the network_attempts fixture ({what})")

        return call

    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


@pytest.fixture
def fsdd() -> Path:
    if not (FSDD / "recordings").is_dir():
        pytest.skip("../shared/data/fsdd is not beside the project")
    return FSDD


def write(path: Path, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sample_rate, subtype=subtype)
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A small labelled corpus: 5 classes x 4 clips at odd lengths, 16 kHz."""
    root = tmp_path / "corpus"
    synth.write_demo_corpus(root, per_class=4)
    return root
