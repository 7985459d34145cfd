"""The encoder contract, shaped after the HEAR API.

An encoder turns a batch of mono float32 waveforms at its own ``sample_rate`` into
timestamp embeddings ``(n, T, D)`` with frame times and a validity mask. Pooling
frames into one vector per window is *not* the encoder's job (see
``retrieval.pooling``); ``scene_embeddings`` is only a convenience for notebooks.

Every encoder must be deterministic and batch-invariant: a clip gives the same
frames alone or inside any batch, padded or not (tested in
``tests/encoders/test_contract.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from retrieval.errors import EncoderError, InputError


@dataclass(frozen=True)
class EncoderOptions:
    """What a user may choose about an encoder.

    Attributes:
        model: checkpoint, as a hub id or a local path; ``None`` takes the encoder's default.
        layer: which hidden layer to read (``"last"``, an integer as text, or ``"mean"``);
            only encoders with layers use it.
        device: torch device string (``"cpu"``, ``"cuda"``).
        precision: ``"fp32"``, ``"fp16"``, ``"bf16"`` or ``"int8"``
            (``retrieval.encoders.precision.PRECISIONS``); each encoder refuses those it lacks.
            ``"auto"`` is resolved to one of them before the encoder is built
            (``retrieval.configure.resolve``).
        extra: encoder-specific settings, recorded in the recipe.
    """

    model: str | None = None
    layer: str | None = None
    device: str = "cpu"
    precision: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FrameEmbeddings:
    """Timestamp embeddings for a batch of windows.

    Attributes:
        embeddings: ``(n, T, D)`` float32 frame vectors.
        times_s: ``(n, T)`` float64, centre of each frame in seconds from the window start.
        mask: ``(n, T)`` bool, True where the frame holds real audio (False for padding
            and for frames an encoder rules out, such as padded tails).
    """

    embeddings: np.ndarray
    times_s: np.ndarray
    mask: np.ndarray

    def __post_init__(self) -> None:
        n, t, _ = self.embeddings.shape
        if self.times_s.shape != (n, t) or self.mask.shape != (n, t):
            raise EncoderError(
                f"frame embeddings {self.embeddings.shape} need times and mask of shape {(n, t)}, "
                f"got {self.times_s.shape} and {self.mask.shape}"
            )


@runtime_checkable
class Encoder(Protocol):
    """What every registered encoder provides.

    Class attributes describe the family; instance attributes the loaded checkpoint.
    """

    name: ClassVar[str]
    #: Default checkpoint (hub id or path), or None for encoders without weights.
    default_model: ClassVar[str | None]
    #: Default analysis window and hop in seconds for ingest.
    default_window_s: ClassVar[float]
    default_hop_s: ClassVar[float]
    #: Pooling used when the user does not choose one.
    default_pooling: ClassVar[str]
    #: Each precision the family runs -> its stated worst cosine to fp32 vectors (fp32 -> 1.0);
    #: ``--precision auto`` picks among them (``retrieval.encoders.precision.choose``).
    precision_cosine: ClassVar[Mapping[str, float]]

    sample_rate: int
    dim: int
    has_text: bool

    def recipe(self) -> dict[str, Any]:
        """Everything about this encoder that changes its vectors (checkpoint, revision, layer, ...)."""
        ...

    def frame_embeddings(self, audio: np.ndarray, lengths: np.ndarray) -> FrameEmbeddings:
        """Embed a batch of windows.

        Args:
            audio: ``(n, S)`` float32 mono at ``sample_rate``, zero-padded on the right.
            lengths: ``(n,)`` int64, valid samples per row (``1 <= lengths <= S``).
        """
        ...

    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 vectors in the audio space; only when ``has_text``."""
        ...


def check_batch(audio: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate an encoder batch at the boundary and return it as float32 / int64.

    Raises:
        InputError: wrong rank, dtype, non-finite samples, or lengths out of range.
    """
    audio = np.asarray(audio)
    lengths = np.asarray(lengths)
    if audio.ndim != 2:
        raise InputError(f"audio must be (n, samples); got shape {audio.shape}")
    if lengths.shape != (audio.shape[0],):
        raise InputError(f"lengths must be ({audio.shape[0]},); got shape {lengths.shape}")
    if audio.dtype != np.float32:
        audio = audio.astype(np.float32)
    lengths = lengths.astype(np.int64)
    if audio.shape[0] and (lengths.min() < 1 or lengths.max() > audio.shape[1]):
        raise InputError(
            f"lengths must lie in [1, {audio.shape[1]}]; got [{lengths.min()}, {lengths.max()}]"
        )
    if not np.isfinite(audio).all():
        raise InputError("audio holds NaN or Inf samples; clean it before encoding")
    return audio, lengths


def text_unsupported(name: str, with_text: list[str]) -> EncoderError:
    """The error for a text query against an encoder without a text tower."""
    return EncoderError(
        f"encoder {name!r} has no text tower; text search needs one of: {', '.join(with_text)} "
        f"(re-index with --encoder {with_text[0]})"
    )
