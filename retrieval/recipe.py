"""How an index's vectors were made, and a hash of it.

Two vectors are comparable only if everything that shapes them is equal: encoder,
checkpoint and its settings, sample rate, window and hop, pooling, post-processing
and precision. Library versions are recorded too but left out of the hash: a patch
release of torch should not lock a user out of their own index.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

from retrieval.errors import RecipeMismatchError

#: Libraries whose versions are recorded with every index.
VERSIONED = ("retrieve", "torch", "transformers", "numpy", "faiss-cpu", "duckdb", "soxr", "soundfile")


def library_versions() -> dict[str, str | None]:
    """Installed versions of :data:`VERSIONED`, None for the missing ones (no imports)."""
    out: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@dataclass(frozen=True)
class Recipe:
    """Everything that determines an index's vectors.

    Attributes:
        encoder: registry name.
        encoder_options: what the user chose (``model``, ``layer``, ``extra``), enough to
            rebuild the encoder on a later run.
        encoder_params: the encoder's own ``recipe()`` (checkpoint, layer, front-end, ...).
        sample_rate: Hz the audio is resampled to.
        window_samples, hop_samples: analysis window and hop at ``sample_rate``.
        pooling: pooling mode (``retrieval.pooling``).
        postprocess: post-processing mode (``retrieval.postprocess``).
        precision: ``fp32``, ``bf16`` or ``int8``.
        frame_dim: size of one frame vector ``D``.
        dim: size of a stored (pooled) vector ``P``.
        silence_db: windows quieter than this RMS level (dBFS) are kept out of the
            vector index; None keeps every window.
        versions: library versions when the index was made (not hashed).
    """

    encoder: str
    encoder_options: dict[str, Any]
    encoder_params: dict[str, Any]
    sample_rate: int
    window_samples: int
    hop_samples: int
    pooling: str
    postprocess: str
    precision: str
    frame_dim: int
    dim: int
    silence_db: float | None
    versions: dict[str, str | None] = field(default_factory=library_versions, compare=False)

    @property
    def window_s(self) -> float:
        return self.window_samples / self.sample_rate

    @property
    def hop_s(self) -> float:
        return self.hop_samples / self.sample_rate

    def hashed_fields(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("versions")
        return d

    def hash(self) -> str:
        """sha256 (16 hex digits) of the canonical JSON of the hashed fields."""
        blob = json.dumps(self.hashed_fields(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        return cls(**json.loads(text))

    def differences(self, other: Recipe) -> list[str]:
        """Human-readable ``field: ours != theirs`` lines for every hashed field that differs."""
        ours, theirs = self.hashed_fields(), other.hashed_fields()
        lines = []
        for key in ours:
            a, b = ours[key], theirs.get(key)
            if key in ("encoder_params", "encoder_options") and isinstance(a, dict) and isinstance(b, dict):
                lines += [f"{key}.{k}: {a.get(k)!r} != {b.get(k)!r}"
                          for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            elif a != b:
                lines.append(f"{key}: {a!r} != {b!r}")
        return lines

    def check_same(self, other: Recipe) -> None:
        """Raise :class:`RecipeMismatchError` naming each difference, if any."""
        diff = self.differences(other)
        if diff:
            raise RecipeMismatchError(
                f"index was built with encoder {self.encoder} (dim {self.dim}); this run uses "
                f"{other.encoder} (dim {other.dim}). Differences (index != this run): {'; '.join(diff)}. "
                "Pass the index's settings, choose another --index, or delete the index to rebuild it."
            )
