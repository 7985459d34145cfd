"""Seeded synthetic audio: test signals and a small labelled demo corpus.

Used by the tests (odd lengths, odd rates), the benchmarks, and ``scripts/demo.sh``
when the real FSDD recordings are not beside the project. Every function is
deterministic for a given seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

#: Classes of the demo corpus and how each is made.
DEMO_CLASSES = ("tone", "chirp", "noise", "clicks", "vowel")


def sine(freq_hz: float, duration_s: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    """``(round(duration_s * sample_rate),)`` float32 sine."""
    t = np.arange(int(round(duration_s * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def chirp(f0_hz: float, f1_hz: float, duration_s: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    """Linear chirp from ``f0_hz`` to ``f1_hz``."""
    n = int(round(duration_s * sample_rate))
    t = np.arange(n) / sample_rate
    phase = 2 * np.pi * (f0_hz * t + (f1_hz - f0_hz) * t**2 / (2 * max(duration_s, 1e-9)))
    return (amplitude * np.sin(phase)).astype(np.float32)


def noise(duration_s: float, sample_rate: int, seed: int = 0, amplitude: float = 0.3) -> np.ndarray:
    """White Gaussian noise with standard deviation ``amplitude / 3`` (peaks near ``amplitude``)."""
    rng = np.random.default_rng(seed)
    return (amplitude / 3 * rng.standard_normal(int(round(duration_s * sample_rate)))).astype(np.float32)


def clicks(rate_hz: float, duration_s: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """Decaying noise bursts every ``1 / rate_hz`` seconds."""
    n = int(round(duration_s * sample_rate))
    out = np.zeros(n, np.float32)
    burst = noise(0.02, sample_rate, seed, 0.9) * np.exp(-np.linspace(0, 6, int(0.02 * sample_rate)))
    step = max(int(sample_rate / rate_hz), 1)
    for start in range(0, n, step):
        seg = burst[: n - start]
        out[start:start + len(seg)] += seg
    return out


def vowel(f0_hz: float, formants_hz: tuple[float, ...], duration_s: float, sample_rate: int) -> np.ndarray:
    """A crude voiced vowel: a harmonic series shaped by formant resonances."""
    t = np.arange(int(round(duration_s * sample_rate))) / sample_rate
    out = np.zeros_like(t)
    for h in range(1, int((sample_rate / 2) // f0_hz)):
        f = h * f0_hz
        gain = sum(1.0 / (1.0 + ((f - fm) / 80.0) ** 2) for fm in formants_hz)
        out += gain * np.sin(2 * np.pi * f * t)
    env = np.minimum(1.0, np.minimum(t / 0.03, (t[-1] - t) / 0.05 + 1e-9)) if t.size else t
    return (0.5 * out * env / max(np.abs(out).max(), 1e-9)).astype(np.float32)


def demo_clip(label: str, index: int, sample_rate: int = 16000) -> np.ndarray:
    """One clip of class ``label`` with seeded variation in pitch, length and level."""
    rng = np.random.default_rng(1000 * DEMO_CLASSES.index(label) + index)
    dur = float(rng.uniform(0.6, 2.5))
    if label == "tone":
        x = sine(rng.uniform(300, 1200), dur, sample_rate)
    elif label == "chirp":
        f0 = rng.uniform(200, 800)
        x = chirp(f0, f0 * rng.uniform(3, 6), dur, sample_rate)
    elif label == "noise":
        x = noise(dur, sample_rate, seed=index)
    elif label == "clicks":
        x = clicks(rng.uniform(4, 12), dur, sample_rate, seed=index)
    else:
        x = vowel(rng.uniform(90, 220), (rng.uniform(600, 900), rng.uniform(1000, 1400)), dur, sample_rate)
    x = x + noise(dur, sample_rate, seed=10_000 + index, amplitude=0.02)[: len(x)]
    return (x * rng.uniform(0.3, 1.0)).astype(np.float32)


def write_demo_corpus(root: Path, per_class: int = 12, sample_rate: int = 16000) -> list[Path]:
    """Write ``root/<label>/<label>_<i>.wav`` for every demo class; returns the paths."""
    paths = []
    for label in DEMO_CLASSES:
        (Path(root) / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = Path(root) / label / f"{label}_{i:02d}.wav"
            sf.write(path, demo_clip(label, i, sample_rate), sample_rate, subtype="PCM_16")
            paths.append(path)
    return paths
