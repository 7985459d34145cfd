"""CLAP (contrastive language-audio pretraining) through ``transformers.ClapModel``.

One window in, one vector out: each window of at most 10 s (the model's input length,
``max_samples`` = 480 000 at 48 kHz) becomes a single frame (``T = 1``): the L2-normalised
audio projection, exactly what ``ClapModel.get_audio_features`` returns, timed at the
centre of the window's valid audio. Text goes through the text tower and projection into
the same space (:meth:`ClapEncoder.text_embeddings`), so a text-audio score is a cosine.

**Files longer than 10 s.** The model cannot see more than 10 s, so a window may not be
longer (``frame_embeddings`` raises :class:`~retrieval.errors.InputError` otherwise, and
:meth:`ClapEncoder.check_window` lets ingest refuse a ``--window-s`` above 10 up front).
Ingest cuts a longer file into windows of ``window_s <= 10`` every ``hop_s`` (defaults 10 s
and 5 s), each window is embedded on its own, and the file vector pools the window
vectors (default ``mean``; with ``T = 1`` the window stage is the identity). Windows
shorter than 10 s (the file's tail, or a short file) are repeat-padded by the front end as
the reference does, so a 2 s clip is heard five times, not followed by 8 s of silence.

The front end is :mod:`retrieval.encoders.clap.features` (torch, batched, deterministic);
weights load through :mod:`retrieval.encoders.clap.loading` (transformers folders, hub ids
and LAION ``.pt`` files); fast modes are in :mod:`retrieval.encoders.precision`.

Encoder options (``EncoderOptions.extra``, ``--opt KEY=VALUE`` on the CLI; recorded in the recipe):
    processor: tokenizer and front-end source for a LAION ``.pt`` checkpoint (a
        transformers CLAP folder or hub id; default ``laion/clap-htsat-unfused``).
    batch_size: windows per forward pass (default 8; texts use 8x as many). Vectors do not
        depend on it.
    trust_pickle: allow full unpickling of a ``.pt`` checkpoint you trust (default False).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from retrieval.encoders.base import EncoderOptions, FrameEmbeddings, check_batch
from retrieval.encoders.clap.loading import load_clap
from retrieval.encoders.precision import TORCH_PRECISION_COSINE, autocast, check_precision, prepare, rows_per_pass
from retrieval.encoders.weights import choose_model, weights_digest
from retrieval.errors import InputError

#: Settings ``EncoderOptions.extra`` may hold, with their defaults.
EXTRA_DEFAULTS: dict[str, Any] = {"processor": None, "batch_size": 8, "trust_pickle": False}


class ClapEncoder:
    """CLAP audio and text towers (see the module docstring)."""

    name: ClassVar[str] = "clap"
    default_model: ClassVar[str | None] = "laion/clap-htsat-unfused"
    default_window_s: ClassVar[float] = 10.0
    default_hop_s: ClassVar[float] = 5.0
    default_pooling: ClassVar[str] = "mean"
    precision_cosine: ClassVar[Mapping[str, float]] = TORCH_PRECISION_COSINE

    has_text: bool = True

    def __init__(self, options: EncoderOptions | None = None) -> None:
        """Load the checkpoint named by ``options.model`` (or ``RETRIEVE_CLAP_MODEL``, or the default).

        Raises:
            WeightsNotFoundError: the checkpoint is not available offline; the message says
                how to provide it.
            InputError / UnknownNameError: an unknown extra setting or precision.
        """
        options = options or EncoderOptions()
        unknown = set(options.extra) - set(EXTRA_DEFAULTS)
        if unknown:
            raise InputError(f"unknown clap settings {sorted(unknown)}; valid: {sorted(EXTRA_DEFAULTS)}")
        if options.layer not in (None, "last"):
            raise InputError(f"clap has one output (the audio projection); got layer={options.layer!r}: drop --layer")
        extra = {**EXTRA_DEFAULTS, **options.extra}
        self.batch_size: int = _positive_int("batch_size", extra["batch_size"])
        self.device = options.device
        self.precision = check_precision(options.precision, options.device)
        self.checkpoint = choose_model(self.name, options.model, self.default_model)
        loaded = load_clap(self.checkpoint, device=options.device, processor=extra["processor"],
                           trust_pickle=_flag("trust_pickle", extra["trust_pickle"]))
        self.model = prepare(loaded.model, self.precision)
        self.tokenizer = loaded.tokenizer
        self.features = loaded.features
        self._info = loaded.info
        self.sample_rate: int = self.features.config.sample_rate
        self.max_samples: int = self.features.config.max_samples
        self.dim: int = int(loaded.model.config.projection_dim)
        #: ``exp(logit_scale_a)``: the model's audio-to-text softmax scale (zero-shot temperature).
        self.logit_scale: float = float(loaded.model.logit_scale_a.detach().exp())
        text_positions = int(loaded.model.config.text_config.max_position_embeddings) - 2  # RoBERTa offset
        own_limit = loaded.text_max_tokens or int(self.tokenizer.model_max_length)  # 77 for LAION .pt files
        self.max_text_tokens: int = min(own_limit, text_positions)

    @property
    def max_window_s(self) -> float:
        """Longest window the model can see, in seconds (10.0 for released checkpoints)."""
        return self.max_samples / self.sample_rate

    def check_window(self, window_s: float) -> None:
        """Refuse an ingest window the model cannot see.

        Raises:
            InputError: ``window_s`` is above :attr:`max_window_s` or not positive.
        """
        if not 0 < window_s <= self.max_window_s:
            raise InputError(
                f"clap windows must be 0 < window_s <= {self.max_window_s:g} s (the model hears at most "
                f"{self.max_window_s:g} s); got {window_s:g} s: pass --window-s {self.max_window_s:g} or less, "
                "longer files are cut into windows and pooled"
            )

    def recipe(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "revision": self._info["revision"],
            "format": self._info["format"],
            "processor": self._info["processor"],
            "projection_dim": self.dim,
            "precision": self.precision,
            "front_end": self.features.config.as_dict(),
            # local files only: identifies the weights wherever they move (retrieval.recipe); hashed
            # here, when an index records the recipe, not on every load for a query
            **({"checkpoint_sha256": weights_digest(self._info["weights_path"])} if self._info["weights_path"] else {}),
        }

    def frame_embeddings(self, audio: np.ndarray, lengths: np.ndarray) -> FrameEmbeddings:
        """One unit-length frame per window.

        Args:
            audio: ``(n, S)`` float32 mono at 48 kHz, zero-padded on the right.
            lengths: ``(n,)`` int64 valid samples, each at most :attr:`max_samples`.

        Returns:
            embeddings ``(n, 1, dim)`` float32 (``get_audio_features`` of each window),
            times_s ``(n, 1)`` float64 (centre of the valid audio), mask ``(n, 1)`` all True.

        Raises:
            InputError: a window longer than :attr:`max_window_s`, or a malformed batch.
        """
        audio, lengths = check_batch(audio, lengths)
        n = audio.shape[0]
        if n and int(lengths.max()) > self.max_samples:
            longest = int(lengths.max())
            raise InputError(
                f"clap sees at most {self.max_samples} samples ({self.max_window_s:g} s at {self.sample_rate} Hz) "
                f"per window; got a window of {longest} samples ({longest / self.sample_rate:.2f} s): "
                f"cut audio into windows of --window-s {self.max_window_s:g} or less"
            )
        vectors = np.zeros((n, self.dim), np.float32)
        for start in range(0, n, self.batch_size):
            rows = slice(start, start + self.batch_size)
            width = int(lengths[rows].max())
            feats, is_longer = self.features(torch.from_numpy(audio[rows, :width]), torch.from_numpy(lengths[rows]))
            step = rows_per_pass(self.precision, len(feats))
            for k in range(0, len(feats), step):
                vectors[start + k : start + k + step] = self._audio_vectors(feats[k : k + step], is_longer[k : k + step])
        times = (lengths.astype(np.float64) / (2.0 * self.sample_rate))[:, None]
        return FrameEmbeddings(vectors[:, None, :], times, np.ones((n, 1), bool))

    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 unit vectors (``get_text_features``), in the audio space.

        Texts longer than :attr:`max_text_tokens` tokens are truncated.

        Raises:
            InputError: ``texts`` is not a list of strings.
        """
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InputError(f"text_embeddings needs a list of strings; got {type(texts).__name__}"
                             + (" (wrap a single query in a list)" if isinstance(texts, str) else ""))
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        step = 8 * self.batch_size
        for start in range(0, len(texts), step):
            enc = self.tokenizer(texts[start : start + step], padding=True, truncation=True,
                                 max_length=self.max_text_tokens, return_tensors="pt")
            with torch.inference_mode(), autocast(self.precision, self.device):
                pooled = self.model.text_model(input_ids=enc["input_ids"].to(self.device),
                                               attention_mask=enc["attention_mask"].to(self.device)).pooler_output
                emb = self.model.text_projection(pooled)
            out[start : start + step] = F.normalize(emb.float(), dim=-1).cpu().numpy()
        return out

    # -- internals ----------------------------------------------------------------------------

    def _audio_vectors(self, feats: torch.Tensor, is_longer: torch.Tensor) -> np.ndarray:
        """``(b, C, frames, mels)`` features -> ``(b, dim)`` float32 unit vectors."""
        with torch.inference_mode(), autocast(self.precision, self.device):
            pooled = self.model.audio_model(input_features=feats, is_longer=is_longer).pooler_output
            emb = self.model.audio_projection(pooled)
        return F.normalize(emb.float(), dim=-1).cpu().numpy()


def _positive_int(name: str, value: Any) -> int:
    """An integer >= 1 from an int or its text (``--opt batch_size=4``)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"clap {name} must be a positive integer; got {value!r}")
    return value


def _flag(name: str, value: Any) -> bool:
    """A bool from a bool or its text (``true``/``false``, ``1``/``0``, ``yes``/``no``)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise InputError(f"clap {name} must be true or false; got {value!r}")
