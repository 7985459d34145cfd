"""wav2vec2-family speech encoders through transformers: wav2vec2, HuBERT, WavLM, data2vec-audio.

Any checkpoint whose model takes raw ``input_values`` through a strided conv front-end
(``config.conv_kernel`` / ``config.conv_stride``) and a transformer loads here, from a hub
id or a ``save_pretrained`` folder. The checkpoint's own feature-extractor config decides
normalisation (``do_normalize``: zero mean, unit variance over each clip's valid samples)
and whether the model is given an attention mask (``return_attention_mask``), exactly as
transformers' ``Wav2Vec2FeatureExtractor`` would for the clip alone.

Batch invariance and batching. Zero-padding a clip changes what checkpoints trained
without attention masks compute (``wav2vec2-base`` normalises its first conv layer over
time with group norm), so padded samples must never reach the conv front-end. Rows are
sorted by length and cut into forward passes (:func:`plan_groups`):

* for families whose transformer masks padded frames exactly (:data:`PADDING_SAFE`),
  rows of similar length share a pass: the conv front-end runs on each row's valid
  samples alone (:class:`RowwiseConv`, rows of equal length together), the frames are
  padded, and the transformer gets the attention mask that covers them;
* for the others (data2vec-audio, whose stacked positional convolutions carry padding into
  valid frames even with a mask; any family not verified) a pass holds rows of one exact
  length and runs unpadded.

Either way a clip gives the same frames, to float rounding (tested at 1e-5), alone or in
any batch, and the same as transformers' feature extractor and model on the clip alone.
Under ``int8`` every row runs as its own pass: dynamic quantisation computes one activation
scale over the whole input of a pass, so rows sharing one would change each other's frames
(measured on a tiny model: up to 6e-3).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from retrieval.encoders._wav2vec2_load import conv_geometry, load_checkpoint, snapshot_revision
from retrieval.encoders.precision import TORCH_PRECISION_COSINE, autocast, rows_per_pass
from retrieval.encoders.base import EncoderOptions, FrameEmbeddings, check_batch, text_unsupported
from retrieval.encoders.weights import weights_digest
from retrieval.errors import EncoderError

#: ``model_type`` values whose transformer zeroes and masks padded frames, so a padded row's
#: valid frames equal the row alone (tested); the others always run unpadded.
PADDING_SAFE: frozenset[str] = frozenset({"wav2vec2", "hubert", "wavlm"})
#: Padded samples a shared forward pass may add, as a fraction of the valid samples.
PAD_SLACK = 0.25
#: Samples per forward pass (60 s at 16 kHz): bounds conv activations (~65 MB per second of
#: audio for wav2vec2-base).
MAX_BATCH_SAMPLES = 960_000
#: Added to the variance before the square root, as in ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm``.
NORM_EPS = 1e-7


class Wav2Vec2Encoder:
    """Frames from one hidden layer of a wav2vec2-family model (see module docstring).

    Attributes:
        checkpoint: the hub id or path the user named; ``revision``: its cache commit hash or None.
        sample_rate: Hz, from the checkpoint's feature-extractor config (16000 for every
            released checkpoint).
        dim: ``config.hidden_size``; ``n_layers``: ``config.num_hidden_layers``.
        layer: resolved layer: ``"last"``, ``"mean"`` or an ``int`` index into ``hidden_states``
            (for an index below the last, the layers above it are dropped from ``model``).
        hop_samples, frame_samples: stride and receptive field of the conv front-end, in samples.
        pad_within_groups: whether rows of similar length share a padded forward pass.
        model: the transformers model, for running only: its conv front-end is wrapped in
            :class:`RowwiseConv` when ``pad_within_groups``.
    """

    name: ClassVar[str] = "wav2vec2"
    default_model: ClassVar[str | None] = "facebook/wav2vec2-base"
    default_window_s: ClassVar[float] = 10.0
    default_hop_s: ClassVar[float] = 5.0
    default_pooling: ClassVar[str] = "mean"
    precision_cosine: ClassVar[Mapping[str, float]] = TORCH_PRECISION_COSINE

    has_text: bool = False

    def __init__(self, options: EncoderOptions | None = None) -> None:
        options = options or EncoderOptions()
        ckpt = load_checkpoint(self.name, options, self.default_model)
        self.checkpoint = ckpt.model_id
        self.model = ckpt.model
        self.config = ckpt.model.config
        self.device = ckpt.device
        self.precision = ckpt.precision
        self.sample_rate = ckpt.sample_rate
        self.do_normalize = ckpt.do_normalize
        self.return_attention_mask = ckpt.return_attention_mask
        self.revision = snapshot_revision(ckpt.path)
        self._weights_path = ckpt.path if ckpt.local else None
        self.dim = int(self.config.hidden_size)
        self.n_layers = int(self.config.num_hidden_layers)
        self.layer = ckpt.layer
        self.hop_samples, self.frame_samples = conv_geometry(self.config.conv_kernel, self.config.conv_stride)
        self.pad_within_groups = self.config.model_type in PADDING_SAFE
        if self.pad_within_groups:
            self._conv = RowwiseConv(self.model.feature_extractor)
            self.model.feature_extractor = self._conv
        if isinstance(self.layer, int) and self.layer + 1 < self.n_layers:
            # hidden_states[N] is the input of layer N + 1 in every transformers version;
            # the layers after it never reach the output, so drop them.
            self.model.encoder.layers = self.model.encoder.layers[: self.layer + 1]

    def recipe(self) -> dict[str, Any]:
        """Everything about this encoder that changes its vectors."""
        return {
            "checkpoint": self.checkpoint,
            "revision": self.revision,
            "model_type": self.config.model_type,
            "layer": self.layer,
            "num_layers": self.n_layers,
            "do_normalize": self.do_normalize,
            "return_attention_mask": self.return_attention_mask,
            "feat_extract_norm": getattr(self.config, "feat_extract_norm", None),
            "frame_s": self.frame_samples / self.sample_rate,
            "frame_hop_s": self.hop_samples / self.sample_rate,
            # local folders only: identifies the weights wherever they move (retrieval.recipe);
            # hashed when an index records the recipe, not on every load for a query
            **({"checkpoint_sha256": weights_digest(self._weights_path)} if self._weights_path else {}),
        }

    def frame_embeddings(self, audio: np.ndarray, lengths: np.ndarray) -> FrameEmbeddings:
        """Frames of the chosen layer for each row.

        Args:
            audio: ``(n, S)`` float32 mono at ``sample_rate``, zero-padded on the right.
            lengths: ``(n,)`` int64 valid samples per row.

        Returns:
            ``(n, T, dim)`` float32 frames, ``T`` the longest row's conv frame count; frames
            past a row's own count (computed from padding) are masked out, and a row shorter
            than one receptive field (``frame_samples``) has no valid frame.
        """
        return self._frames(audio, lengths, all_layers=False)[0]

    def layer_frames(self, audio: np.ndarray, lengths: np.ndarray) -> list[FrameEmbeddings]:
        """Frames of every hidden state in one pass: ``num_layers + 1`` items, index as ``--layer``.

        For layer sweeps. Needs the full model: build the encoder with layer ``"last"`` or ``"mean"``.
        """
        if isinstance(self.layer, int) and len(self.model.encoder.layers) < self.n_layers:
            raise EncoderError(
                f"this encoder was built for --layer {self.layer} and dropped the transformer layers above "
                f"{self.layer + 1}; build it with --layer last to read all {self.n_layers + 1} hidden states"
            )
        return self._frames(audio, lengths, all_layers=True)

    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        from retrieval.encoders.registry import text_encoders

        raise text_unsupported(self.name, text_encoders())

    # -- internals -------------------------------------------------------------------------

    def _frames(self, audio: np.ndarray, lengths: np.ndarray, all_layers: bool) -> list[FrameEmbeddings]:
        audio, lengths = check_batch(audio, lengths)
        n = audio.shape[0]
        n_frames = self._n_frames(lengths)
        t_max = int(n_frames.max(initial=0))
        n_out = self.n_layers + 1 if all_layers else 1
        emb = np.zeros((n_out, n, t_max, self.dim), np.float32)
        usable = np.flatnonzero(n_frames > 0)
        groups = plan_groups(lengths[usable], self.pad_within_groups)
        step = rows_per_pass(self.precision, max(len(usable), 1))  # int8: one row per pass
        groups = [g[j : j + step] for g in groups for j in range(0, len(g), step)]
        for group in groups:
            rows = usable[group]
            hidden = self._forward(audio, lengths, rows, all_layers)  # (n_out, k, T', D)
            for j, i in enumerate(rows):
                emb[:, i, : n_frames[i]] = hidden[:, j, : n_frames[i]]
        mask = np.arange(t_max)[None, :] < n_frames[:, None]
        times = (np.arange(t_max) * self.hop_samples + self.frame_samples / 2) / self.sample_rate
        times = np.broadcast_to(times, (n, t_max))
        return [FrameEmbeddings(e, times.copy(), mask.copy()) for e in emb]

    def _n_frames(self, lengths: np.ndarray) -> np.ndarray:
        """``(n,)`` int64 conv frames computed from valid samples only (0 below one receptive field)."""
        out = self.model._get_feat_extract_output_lengths(torch.from_numpy(lengths))
        return np.maximum(np.asarray(out, dtype=np.int64), 0)

    def _forward(self, audio: np.ndarray, lengths: np.ndarray, rows: np.ndarray, all_layers: bool) -> np.ndarray:
        """``(n_out, len(rows), T, dim)`` float32 hidden states of ``rows``, padded to their longest."""
        row_lengths = lengths[rows]
        s_max = int(row_lengths.max())
        x = np.zeros((len(rows), s_max), np.float32)
        for j, i in enumerate(rows):
            x[j, : lengths[i]] = normalise(audio[i, : lengths[i]]) if self.do_normalize else audio[i, : lengths[i]]
        kwargs: dict[str, Any] = {}
        if self.return_attention_mask or row_lengths.min() < s_max:
            am = np.arange(s_max)[None, :] < row_lengths[:, None]
            kwargs["attention_mask"] = torch.from_numpy(am.astype(np.int64)).to(self.device)
        need_all = all_layers or self.layer != "last"
        with (torch.inference_mode(), autocast(self.precision, self.device.type),
              RowwiseConv.lengths_of(self.model.feature_extractor, row_lengths)):
            out = self.model(torch.from_numpy(x).to(self.device), output_hidden_states=need_all, **kwargs)
            if all_layers:
                h = torch.stack(out.hidden_states)
            elif self.layer == "last":
                h = out.last_hidden_state[None]
            elif self.layer == "mean":
                h = (sum(s.float() for s in out.hidden_states) / len(out.hidden_states))[None]
            else:
                h = out.hidden_states[self.layer][None]
            return h.float().cpu().numpy()


class RowwiseConv(torch.nn.Module):
    """Wraps a model's conv front-end so that padding never enters it.

    While :meth:`lengths_of` names the valid samples of each row, ``forward`` runs the wrapped
    module on each row's valid samples (rows of equal length together, unpadded) and zero-fills
    the frames past each row's own count; outside it, the wrapped module runs as it is.
    """

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.lengths: np.ndarray | None = None

    @staticmethod
    @contextlib.contextmanager
    def lengths_of(module: torch.nn.Module, lengths: np.ndarray) -> Iterator[None]:
        """Set ``module.lengths`` (``(n,)`` int64 valid samples) for one forward pass, if it is a RowwiseConv."""
        if not isinstance(module, RowwiseConv):
            yield
            return
        module.lengths = lengths
        try:
            yield
        finally:
            module.lengths = None

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        """``(n, S)`` waveforms -> ``(n, C, T)`` conv features, ``T`` the longest valid row's frame count."""
        if self.lengths is None or (self.lengths == input_values.shape[1]).all():
            return self.inner(input_values)
        parts = []
        for length in np.unique(self.lengths):
            rows = torch.from_numpy(np.flatnonzero(self.lengths == length)).to(input_values.device)
            parts.append((rows, self.inner(input_values[rows, :length])))
        n_frames = max(part.shape[2] for _, part in parts)
        out = parts[0][1].new_zeros((input_values.shape[0], parts[0][1].shape[1], n_frames))
        for rows, part in parts:
            out[rows, :, : part.shape[2]] = part
        return out


def normalise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over ``x``: ``(S,) float32 -> (S,) float32``, as transformers does it."""
    return (x - x.mean()) / np.sqrt(x.var() + NORM_EPS)


def plan_groups(lengths: np.ndarray, pad: bool, max_samples: int = MAX_BATCH_SAMPLES) -> list[np.ndarray]:
    """Split rows into forward passes, longest first.

    Without ``pad`` every pass holds rows of one exact length. With it, a pass takes the
    next-longest rows while the padding stays under ``PAD_SLACK`` of the valid samples.
    Every pass holds at most ``max_samples`` padded samples (and at least one row).

    Args:
        lengths: ``(n,)`` int64 valid samples per row.

    Returns:
        index arrays into ``lengths`` that together cover each row once.
    """
    order = np.argsort(-lengths, kind="stable")
    groups: list[np.ndarray] = []
    start = 0
    while start < len(order):
        top = int(lengths[order[start]])
        stop, valid = start + 1, top
        while stop < len(order):
            nxt = int(lengths[order[stop]])
            fits = (stop - start + 1) * top <= max_samples
            same = nxt == top or (pad and (stop - start + 1) * top <= (1 + PAD_SLACK) * (valid + nxt))
            if not (fits and same):
                break
            stop, valid = stop + 1, valid + nxt
        groups.append(order[start:stop])
        start = stop
    return groups
