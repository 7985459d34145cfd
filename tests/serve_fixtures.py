"""A tiny index for the serve tests: labelled demo clips plus long files made of 4 s pieces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from retrieval import synth

SR = 16000
#: Long files: 4 s pieces, so each logmel window (4 s, hop 2 s) that starts at a multiple
#: of 4 s holds exactly one piece.
PIECES = {"long_a": ("clicks", "chirp", "vowel", "noise"), "long_b": ("tone", "noise", "clicks", "chirp")}


def piece(label: str, i: int) -> np.ndarray:
    """4 s of class ``label``: its demo clip repeated."""
    clip = synth.demo_clip(label, 40 + i, SR)
    return np.resize(clip, 4 * SR).astype(np.float32)


def long_audio(name: str) -> np.ndarray:
    return np.concatenate([piece(lab, j) for j, lab in enumerate(PIECES[name])])


def write_corpus(root: Path) -> Path:
    """``root/<label>/*.wav`` (3 per class) and ``root/long/long_*.wav`` (16 s each)."""
    synth.write_demo_corpus(root, per_class=3)
    (root / "long").mkdir(parents=True, exist_ok=True)
    for name in PIECES:
        sf.write(root / "long" / f"{name}.wav", long_audio(name), SR, subtype="PCM_16")
    return root


def build_index(root: Path) -> tuple[Path, Path]:
    """:func:`write_corpus` under ``root/corpus``, indexed with the defaults into ``root/ix``:
    ``(corpus, index folder)``."""
    from retrieval.index import Index

    corpus = write_corpus(root / "corpus")
    Index.build(corpus, root / "ix").close()
    return corpus, root / "ix"
