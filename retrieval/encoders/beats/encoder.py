"""``BeatsEncoder``: official BEATs checkpoints behind the retrieval encoder contract.

Frames. BEATs makes 8 tokens per 16-frame time patch (one per frequency patch). The
encoder averages the 8 frequency tokens of each time patch into one frame, so frames
are 160 ms apart; frame ``p`` covers samples ``[2560 p, 2560 p + 2800)`` of the window
and ``times_s`` is its centre, ``0.16 p + 0.0875`` s. The last ``T mod 16`` fbank
frames of a clip (under 160 ms) are dropped by the model itself.

Batch invariance. In the official padded batch, padding changes the other rows'
numbers (padded samples enter the fbank and padded tokens enter the positional conv).
``frame_embeddings`` therefore runs each distinct clip length as its own unpadded
sub-batch, so a clip gives the same frames alone or in any batch (up to float32
rounding of batched matrix products). The official padded semantics stay available
through :meth:`BeatsEncoder.official_features`.

Short clips. A clip shorter than 2800 samples (175 ms; one 16-frame patch) is
zero-padded to 2800 samples and gives one frame, which is marked valid.

Precision (``EncoderOptions.precision``, recorded in the recipe). ``fp32`` is the official
numerics. ``bf16`` and ``fp16`` (fp16: CUDA only) run the patch embedding and the
transformer under ``torch.autocast``; the fbank front end stays float32 and the returned
frames are float32. ``int8`` quantises every ``nn.Linear`` dynamically (CPU only); its
activation scale is computed over the whole input of a forward pass, so under int8 every
clip runs as its own forward pass to stay batch-invariant. Cosine to fp32 and the effect
on nearest neighbours are measured in ``docs/bench_ingest.md``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from retrieval.encoders.base import EncoderOptions, FrameEmbeddings, check_batch, text_unsupported
from retrieval.encoders.beats.checkpoint import BeatsCheckpoint, build_model, read_checkpoint, resolve_path
from retrieval.encoders.beats.fbank import FRAME_SHIFT_SAMPLES, SAMPLE_RATE
from retrieval.encoders.beats.layout import freq_patches, min_samples, patch_centres_s, time_patches
from retrieval.encoders.beats.model import BeatsModel
from retrieval.encoders.precision import (
    TORCH_PRECISION_COSINE,
    Precision,
    autocast,
    check_precision,
    prepare,
    rows_per_pass,
)
from retrieval.errors import EncoderError, InputError

#: Rows per forward pass inside one equal-length group (bounds memory; does not change numbers
#: beyond float32 rounding). int8 runs one row per forward pass (see the module docstring).
MAX_ROWS_PER_FORWARD = 16

LayerChoice = int | Literal["mean"]


def parse_layer(layer: str | None, num_layers: int) -> LayerChoice:
    """Which hidden state to return.

    Args:
        layer: ``None`` or ``"last"`` (final output), ``"mean"`` (average of all ``L + 1``
            hidden states), or an integer as text counted like transformers' ``hidden_states``:
            0 is the encoder input after the pre-layer LayerNorm, ``N`` the output of layer ``N``.
        num_layers: layers ``L`` in the checkpoint.

    Returns:
        An index in ``[0, L]`` or ``"mean"``.

    Raises:
        InputError: anything else, listing the valid choices.
    """
    if layer is None or layer == "last":
        return num_layers
    if layer == "mean":
        return "mean"
    text = str(layer).strip()
    if text.isdigit() and int(text) <= num_layers:
        return int(text)
    raise InputError(
        f"unknown BEATs layer {layer!r}; choose 'last', 'mean' or an integer 0..{num_layers} "
        f"(0 = encoder input, {num_layers} = output)"
    )


class BeatsEncoder:
    """BEATs frame embeddings from an official checkpoint (see module docstring).

    Attributes:
        checkpoint: the file read, with its config and sha256.
        model: the :class:`BeatsModel`, in eval mode on ``options.device`` (Linear layers
            quantised for ``int8``).
        precision: ``fp32``, ``fp16``, ``bf16`` or ``int8``.
        dim: ``encoder_embed_dim`` (768 for the released models).
        labels: class labels of a fine-tuned checkpoint (AudioSet ids from ``label_dict``), else None.
    """

    name: ClassVar[str] = "beats"
    default_model: ClassVar[str | None] = "BEATs_iter3_plus_AS2M.pt"
    default_window_s: ClassVar[float] = 10.0  # BEATs was trained on 10 s clips
    default_hop_s: ClassVar[float] = 5.0
    default_pooling: ClassVar[str] = "mean"
    precision_cosine: ClassVar[Mapping[str, float]] = TORCH_PRECISION_COSINE

    sample_rate: int = SAMPLE_RATE
    has_text: bool = False

    def __init__(self, options: EncoderOptions | None = None) -> None:
        options = options or EncoderOptions()
        if options.extra:
            raise InputError(f"BEATs takes no extra settings; got {sorted(options.extra)}")
        try:
            self.device = torch.device(options.device)
        except RuntimeError as exc:
            raise InputError(f"unknown torch device {options.device!r}: {exc}") from exc
        self.precision: Precision = check_precision(options.precision, str(self.device))
        self.checkpoint: BeatsCheckpoint = read_checkpoint(resolve_path(options.model, str(self.default_model)))
        try:
            self.model: BeatsModel = build_model(self.checkpoint, self.device)
        except (RuntimeError, AssertionError) as exc:  # e.g. CUDA requested but unavailable
            raise EncoderError(f"cannot place BEATs on device {options.device!r}: {exc}") from exc
        self.model = prepare(self.model, self.precision)
        self._rows_per_forward = rows_per_pass(self.precision, MAX_ROWS_PER_FORWARD)
        config = self.checkpoint.config
        self.config = config
        self.layer: LayerChoice = parse_layer(options.layer, config.encoder_layers)
        self.dim: int = config.encoder_embed_dim
        self._patch = config.input_patch_size
        self._min_samples = min_samples(self._patch)
        labels = self.checkpoint.label_dict
        self.labels: list[str] | None = (
            [labels.get(i, str(i)) for i in range(config.predictor_class)] if labels is not None else None
        )

    # -- contract ----------------------------------------------------------------------------

    def recipe(self) -> dict[str, Any]:
        """What changes the vectors: checkpoint (path, name, sha256), layer, architecture, framing, precision."""
        return {
            "checkpoint": str(self.checkpoint.path),
            "checkpoint_name": self.checkpoint.path.name,
            "checkpoint_sha256": self.checkpoint.sha256,
            "layer": self.layer if self.layer == "mean" else str(self.layer),
            "architecture": self.config.architecture(),
            "sample_rate": self.sample_rate,
            "frame": "time patch: mean of the frequency-patch tokens",
            "frame_hop_samples": self._patch * FRAME_SHIFT_SAMPLES,
            "min_samples": self._min_samples,
            "batching": "unpadded per-length sub-batches",
            "precision": self.precision,
            "torch": torch.__version__,
        }

    def frame_embeddings(self, audio: np.ndarray, lengths: np.ndarray) -> FrameEmbeddings:
        """Embed a batch of windows, one frame per 16-frame time patch.

        Args:
            audio: ``(n, S)`` float32 mono at 16 kHz in [-1, 1], zero-padded on the right.
            lengths: ``(n,)`` int64 valid samples per row.

        Returns:
            ``embeddings`` ``(n, P_max, D)`` float32, ``times_s`` ``(n, P_max)`` float64 patch centres
            in seconds, ``mask`` ``(n, P_max)`` bool (True for the ``P_i`` patches of row ``i``;
            ``P_i = floor((1 + (max(len_i, 2800) - 400) // 160) / 16)``).
        """
        audio, lengths = check_batch(audio, lengths)
        n = audio.shape[0]
        counts = [time_patches(int(s), self._patch) for s in self._run_lengths(lengths)]
        p_max = max(counts, default=0)
        embeddings = np.zeros((n, p_max, self.dim), np.float32)
        mask = np.zeros((n, p_max), bool)
        for rows, tokens in self._grouped(audio, lengths):
            with torch.inference_mode():
                frames = tokens.view(len(rows), -1, freq_patches(self._patch), self.dim).mean(dim=2)
            embeddings[rows, : frames.shape[1]] = frames.cpu().numpy()
            mask[rows, : frames.shape[1]] = True
        times = patch_centres_s(p_max, self._patch, self.sample_rate)
        return FrameEmbeddings(embeddings, np.broadcast_to(times, (n, p_max)).copy(), mask)

    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        """BEATs has no text tower: always raises :class:`EncoderError`."""
        from retrieval.encoders.registry import text_encoders

        raise text_unsupported(self.name, text_encoders())

    # -- beyond the contract -----------------------------------------------------------------

    def official_features(
        self, waveform: np.ndarray, padding_mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The official ``extract_features`` on a padded batch, for the configured layer.

        Unlike :meth:`frame_embeddings`, rows influence each other through padding exactly as in
        the official code (used by the parity tests).

        Args:
            waveform: ``(B, S)`` float32 16 kHz audio, ``S >= 2800``.
            padding_mask: ``(B, S)`` bool, True = padding sample, or None.

        Returns:
            ``(tokens, token_padding_mask)``: ``(B, N, D)`` float32 tokens in (time, frequency)
            order, and ``(B, N)`` bool (True = padding) or None when no mask was given.
        """
        wave = torch.as_tensor(np.asarray(waveform, np.float32), device=self.device)
        mask = None if padding_mask is None else torch.as_tensor(np.asarray(padding_mask, bool), device=self.device)
        with torch.inference_mode(), autocast(self.precision, str(self.device)):
            out = self.model.extract_features(wave, mask, num_layers=self._layers_needed())
            tokens = self._select(out.hidden_states).float()
        token_mask = None if out.padding_mask is None else out.padding_mask.cpu().numpy()
        return tokens.cpu().numpy(), token_mask

    def class_probabilities(self, audio: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """AudioSet class probabilities per clip, from a fine-tuned checkpoint.

        Each clip runs alone (unpadded, batch-invariant); the probabilities are the sigmoid of
        the predictor's logits averaged over the clip's tokens, as in the official code.

        Args:
            audio: ``(n, S)`` float32 16 kHz, zero-padded on the right.
            lengths: ``(n,)`` int64 valid samples per row.

        Returns:
            ``(n, C)`` float32 in [0, 1], ``C = predictor_class`` (527).

        Raises:
            InputError: the checkpoint is not fine-tuned.
        """
        if self.model.predictor is None:
            raise InputError(
                f"{self.checkpoint.path.name} is a pre-trained BEATs checkpoint without an AudioSet head; "
                f"pass a fine-tuned one (e.g. BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt)"
            )
        audio, lengths = check_batch(audio, lengths)
        probs = np.zeros((audio.shape[0], self.config.predictor_class), np.float32)
        for rows, tokens in self._grouped(audio, lengths, last_layer=True):
            with torch.inference_mode():
                probs[rows] = self.model.class_probabilities(tokens, None).cpu().numpy()
        return probs

    def top_classes(
        self, audio: np.ndarray, lengths: np.ndarray, k: int = 5, label_names: Sequence[str] | None = None
    ) -> list[list[tuple[str | int, float]]]:
        """The ``k`` most probable classes per clip, best first, as ``(label, probability)``.

        Labels come from ``label_names`` (one per class, in class order) when given, else from
        the checkpoint's ``label_dict`` (AudioSet ids such as ``/m/09x0r``), else they are class indices.

        Raises:
            InputError: ``label_names`` of the wrong length, or ``k < 1``.
        """
        classes = self.config.predictor_class
        if label_names is not None and len(label_names) != classes:
            raise InputError(f"label_names needs one name per class ({classes}); got {len(label_names)}")
        if k < 1:
            raise InputError(f"k must be at least 1; got {k}")
        names: Sequence[str] | None = label_names if label_names is not None else self.labels
        probs = self.class_probabilities(audio, lengths)
        result = []
        for row in probs:
            best = np.argsort(-row, kind="stable")[:k]
            result.append([(names[i] if names is not None else int(i), float(row[i])) for i in best])
        return result

    # -- internals ---------------------------------------------------------------------------

    def _run_lengths(self, lengths: np.ndarray) -> np.ndarray:
        """Samples each row is run with: its length, raised to the model minimum (2800)."""
        return np.maximum(lengths, self._min_samples)

    def _grouped(
        self, audio: np.ndarray, lengths: np.ndarray, last_layer: bool = False
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield ``(rows, tokens)`` per equal-length sub-batch.

        ``rows`` is an int64 index array; ``tokens`` is ``(len(rows), N, D)`` float32 (the
        configured layer, or the final output with ``last_layer``), computed without padding,
        at the encoder's precision.
        """
        run = self._run_lengths(lengths)
        for length in np.unique(run):
            group = np.flatnonzero(run == length)
            for start in range(0, len(group), self._rows_per_forward):
                rows = group[start : start + self._rows_per_forward]
                wave = np.zeros((len(rows), int(length)), np.float32)
                for j, i in enumerate(rows):
                    wave[j, : lengths[i]] = audio[i, : lengths[i]]
                with torch.inference_mode(), autocast(self.precision, str(self.device)):
                    out = self.model.extract_features(
                        torch.from_numpy(wave).to(self.device),
                        num_layers=None if last_layer else self._layers_needed(),
                    )
                    tokens = out.output if last_layer else self._select(out.hidden_states)
                yield rows, tokens.float()

    def _layers_needed(self) -> int | None:
        """Layers to run: up to the chosen one, or all for ``"mean"``."""
        return None if self.layer == "mean" else int(self.layer)

    def _select(self, hidden_states: list[torch.Tensor]) -> torch.Tensor:
        """The configured hidden state ``(B, N, D)`` from ``[encoder_in, layer_1, ...]``."""
        if self.layer == "mean":
            return torch.stack([h.float() for h in hidden_states]).mean(dim=0)
        return hidden_states[int(self.layer)]
