"""How an index's vectors were made, and a hash of it.

Two vectors are comparable only if everything that shapes them is equal: encoder,
checkpoint and its settings, sample rate, window and hop, pooling, post-processing
and precision. Library versions are recorded too but left out of the hash: a patch
release of torch should not lock a user out of their own index.

**Where a checkpoint sits is not what it is.** A checkpoint loaded from local files has a
content digest in ``encoder_params["checkpoint_sha256"]`` (:data:`DIGEST_KEY`). Once a
recipe has one, its locations (:data:`LOCATION_OPTIONS`, :data:`LOCATION_PARAMS`: the
path, file name, and a size tag) leave the hash and the comparison, and the digest stands
for the weights: the same files at a new path give the same hash, and
:meth:`Recipe.relocated` re-points the index there. A checkpoint with another digest is
refused, naming both. A recipe recorded before digests existed keeps its locations in the
hash and is compared as before (a relative path and the absolute path it names count as
the same place); its checkpoint cannot be re-pointed, since nothing says what the weights
were.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from retrieval.errors import RecipeMismatchError
from retrieval.options import (
    POOLING_MODES,
    POSTPROCESS_MODES,
    PRECISIONS,
    PoolingMode,
    PostprocessMode,
    Precision,
    check_choice,
)

#: ``encoder_params`` key of a local checkpoint's content digest (``weights.weights_digest``).
DIGEST_KEY = "checkpoint_sha256"
#: ``encoder_options`` / ``encoder_params`` keys that say where a checkpoint sits, not what it is.
LOCATION_OPTIONS = ("model",)
LOCATION_PARAMS = ("checkpoint", "checkpoint_name", "revision")

#: Libraries whose versions are recorded with every index.
VERSIONED = ("retrieve", "torch", "transformers", "numpy", "faiss-cpu", "duckdb", "soxr", "soundfile")


def library_versions() -> dict[str, str | None]:
    """Installed versions of :data:`VERSIONED`, None for the missing ones (no imports)."""
    from importlib import metadata  # ~30 ms to import; only a new recipe asks for versions

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
        precision: a resolved precision (``fp32``, ``fp16``, ``bf16`` or ``int8``; never ``auto``).
        frame_dim: size of one frame vector ``D``.
        dim: size of a stored (pooled) vector ``P``.
        silence_db: windows quieter than this RMS level (dBFS) are kept out of the
            vector index; None keeps every window.
        copies: copy frames (:mod:`retrieval.copies`) are computed at ingest. Not hashed and
            not compared: they sit beside the vectors and change none, so turning them on
            keeps every vector.
        versions: library versions when the index was made (not hashed).
    """

    encoder: str
    encoder_options: dict[str, Any]
    encoder_params: dict[str, Any]
    sample_rate: int
    window_samples: int
    hop_samples: int
    pooling: PoolingMode
    postprocess: PostprocessMode
    precision: Precision
    frame_dim: int
    dim: int
    silence_db: float | None
    copies: bool = field(default=False, compare=False)
    versions: dict[str, str | None] = field(default_factory=library_versions, compare=False)

    def __post_init__(self) -> None:
        """Check the option sets once, here; code holding a Recipe trusts them (ChoiceError lists the valid values)."""
        check_choice("pooling", self.pooling, POOLING_MODES)
        check_choice("post-processing", self.postprocess, POSTPROCESS_MODES)
        check_choice("precision", self.precision, PRECISIONS)

    @property
    def window_s(self) -> float:
        return self.window_samples / self.sample_rate

    @property
    def hop_s(self) -> float:
        return self.hop_samples / self.sample_rate

    @property
    def digest(self) -> str | None:
        """The checkpoint's content digest (local checkpoints built since digests exist), else None."""
        return self.encoder_params.get(DIGEST_KEY)

    @property
    def location(self) -> str | None:
        """Where the checkpoint was loaded from: ``--model`` as recorded, else the encoder's checkpoint."""
        return self.encoder_options.get("model") or self.encoder_params.get("checkpoint")

    def hashed_fields(self) -> dict[str, Any]:
        """The fields that shape the vectors; with a digest, the checkpoint's locations are left out."""
        d = asdict(self)
        d.pop("versions")
        d.pop("copies")
        if self.digest:
            d["encoder_options"] = _without(d["encoder_options"], LOCATION_OPTIONS)
            d["encoder_params"] = _without(d["encoder_params"], LOCATION_PARAMS)
        return d

    def relocated(self, other: Recipe) -> Recipe | None:
        """This recipe with ``other``'s checkpoint locations, when both name the same weights elsewhere.

        None unless both have the same digest and a location differs. The hash does not change.
        """
        if not self.digest or self.digest != other.digest:
            return None
        options = {**self.encoder_options, **{k: other.encoder_options.get(k) for k in LOCATION_OPTIONS}}
        params = {**self.encoder_params, **{k: other.encoder_params[k] for k in LOCATION_PARAMS
                                            if k in other.encoder_params}}
        if options == self.encoder_options and params == self.encoder_params:
            return None
        return replace(self, encoder_options=options, encoder_params=params)

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
        ours, theirs = self._compared_with(other), other._compared_with(self)
        lines = []
        for key in ours:
            a, b = ours[key], theirs.get(key)
            if key in ("encoder_params", "encoder_options") and isinstance(a, dict) and isinstance(b, dict):
                places = LOCATION_OPTIONS if key == "encoder_options" else LOCATION_PARAMS
                lines += [f"{key}.{k}: {a.get(k)!r} != {b.get(k)!r}"
                          for k in sorted(set(a) | set(b))
                          if a.get(k) != b.get(k) and not (k in places and _same_place(a.get(k), b.get(k)))]
            elif a != b:
                lines.append(f"{key}: {a!r} != {b!r}")
        return lines

    def _compared_with(self, other: Recipe) -> dict[str, Any]:
        """The fields :meth:`differences` compares with ``other``: the hashed ones when both have a
        digest; else every one but the digest (which only one side, or neither, has)."""
        if self.digest and other.digest:
            return self.hashed_fields()
        d = asdict(self)
        d.pop("versions")
        d.pop("copies")
        d["encoder_params"] = _without(d["encoder_params"], (DIGEST_KEY,))
        return d

    def check_same(self, other: Recipe) -> None:
        """Raise :class:`RecipeMismatchError` naming each difference, if any."""
        if self.digest and other.digest and self.digest != other.digest:
            raise RecipeMismatchError(
                f"the {other.encoder} checkpoint at {other.location} (weights sha256 {other.digest}) is not the "
                f"one this index was built from, {self.location} (weights sha256 {self.digest}), so their "
                "vectors are not comparable. Pass the checkpoint the index was built from (from wherever it "
                "is now: the weights are recognised by digest), or choose another --index to build a new one."
            )
        diff = self.differences(other)
        if diff and not self.digest and other.digest and any(".model:" in d or ".checkpoint:" in d for d in diff):
            diff.append(f"this index was made before checkpoint digests were recorded, so a checkpoint moved "
                        f"from {self.location} cannot be recognised at its new place: put it back there, or "
                        "build a new index")
        if diff:
            raise RecipeMismatchError(
                f"index was built with encoder {self.encoder} (dim {self.dim}); this run uses "
                f"{other.encoder} (dim {other.dim}). Differences (index != this run): {'; '.join(diff)}. "
                "Pass the index's settings, choose another --index, or delete the index to rebuild it."
            )


def _without(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


def _same_place(a: Any, b: Any) -> bool:
    """Whether two recorded locations name the same file or folder here (a relative path as recorded
    before paths were made absolute, and the absolute path it resolves to)."""
    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return (pa.exists() or pb.exists()) and pa.resolve() == pb.resolve()
