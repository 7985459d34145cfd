"""Helpers shared by the benchmark scripts (``python scripts/bench_*.py`` puts this folder on the path)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


class CachedResolve:
    """Stands in for ``retrieval.ingest.resolve``: loads each encoder once, then reuses it.

    Timed ingest runs then measure indexing, not model loading; each load's seconds are kept
    in :attr:`load_s` under ``label(choices)`` (by default the encoder's name).
    """

    def __init__(self, label: Callable[[Any], str] = lambda choices: choices.encoder or "logmel") -> None:
        from retrieval.configure import resolve

        self.resolve = resolve
        self.label = label
        self.cache: dict[str, tuple[Any, Any]] = {}
        self.load_s: dict[str, float] = {}

    def __call__(self, choices: Any, stored: Any) -> tuple[Any, Any]:
        key = repr(choices)
        if key not in self.cache:
            start = time.perf_counter()
            self.cache[key] = self.resolve(choices, stored)
            self.load_s[self.label(choices)] = time.perf_counter() - start
        return self.cache[key]


def pad(clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(n, S)`` float32 right-padded audio and ``(n,)`` int64 lengths."""
    lengths = np.array([len(c) for c in clips], np.int64)
    audio = np.zeros((len(clips), int(lengths.max())), np.float32)
    for i, c in enumerate(clips):
        audio[i, : len(c)] = c
    return audio, lengths


def write_full_clap(folder: Path) -> Path:
    """Save a random full-size ``ClapModel`` (seed 0) with a processor: a byte-level tokenizer
    built locally and the real front end (``rand_trunc``, 50 Hz-14 kHz). Speed does not depend
    on the weights, so this stands in for ``laion/clap-htsat-unfused`` offline."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    torch.manual_seed(0)
    ClapModel(ClapConfig()).eval().save_pretrained(folder)
    chars = [chr(c) for c in range(ord("!"), ord("~") + 1)] + [chr(c) for c in range(256, 256 + 68)]
    vocab = {tok: i for i, tok in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>", "Ġ"] + chars)}
    tokenizer = RobertaTokenizer(vocab=vocab, merges=[], model_max_length=512)
    extractor = ClapFeatureExtractor(truncation="rand_trunc", frequency_min=50, frequency_max=14000)
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
