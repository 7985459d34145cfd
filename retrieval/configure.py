"""Turn user choices into a loaded encoder and the recipe it implies, and back.

Every option is ``None`` when the user did not choose it. On an existing index the
stored recipe fills those in; a choice that contradicts it is refused by
``Recipe.check_same`` with the list of differences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval import encoders
from retrieval.audio.windows import check_window, to_samples
from retrieval.encoders.base import Encoder, EncoderOptions
from retrieval.encoders.precision import choose
from retrieval.encoders.weights import absolute_model, is_local
from retrieval.errors import InputError, WeightsNotFoundError
from retrieval.options import (
    DEFAULT_POSTPROCESS,
    POOLING_MODES,
    POSTPROCESS_MODES,
    PRECISION_CHOICES,
    PoolingMode,
    PostprocessMode,
    PrecisionChoice,
    check_choice,
)
from retrieval.pooling import pooled_dim
from retrieval.recipe import Recipe

#: Default post-processing for new indexes. PCA-whitening fitted on the corpus, with
#: shrinkage, is label-free and lifted FSDD kNN accuracy@1 of the baseline from 0.659
#: (none) and 0.724 (center) to 0.765 (docs/benchmarks.md). Text search is unaffected:
#: it is scored against the raw vectors (see ``Index.search_text``).
#: Precision of new indexes when none is chosen. Not ``auto``: fp32 is the reference numerics,
#: gives the same recipe (and hash) on every machine, and keeps the hashes of indexes built
#: before ``auto`` existed; ``--precision auto`` is the documented way to go faster.
DEFAULT_PRECISION = "fp32"
#: Windows quieter than this RMS level (dBFS) stay out of the vector index by default.
DEFAULT_SILENCE_DB = -60.0


@dataclass(frozen=True)
class Choices:
    """What a user asked for; None means "the index's value, else the default".

    ``silence_db`` uses ``float('-inf')`` for "keep every window". Pooling, post-processing
    and precision are checked when the object is built (:class:`~retrieval.errors.ChoiceError`).
    """

    encoder: str | None = None
    model: str | None = None
    layer: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    window_s: float | None = None
    hop_s: float | None = None
    pooling: PoolingMode | None = None
    postprocess: PostprocessMode | None = None
    precision: PrecisionChoice | None = None  # a precision or "auto" (resolved here; the recipe never says "auto")
    silence_db: float | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name, value, valid in (("pooling", self.pooling, POOLING_MODES),
                                   ("post-processing", self.postprocess, POSTPROCESS_MODES),
                                   ("precision", self.precision, PRECISION_CHOICES)):
            if value is not None:
                check_choice(name, value, valid)


def resolve(choices: Choices, stored: Recipe | None) -> tuple[Encoder, Recipe]:
    """Load the encoder and build the recipe for ``choices`` on top of ``stored``."""
    opts = stored.encoder_options if stored else {}
    same_encoder = stored is None or choices.encoder in (None, stored.encoder)
    name = choices.encoder or (stored.encoder if stored else "logmel")
    inherit = stored if same_encoder else None
    # a local --model is recorded absolute, so the index works from any directory
    model = absolute_model(choices.model) if choices.model is not None else (opts.get("model") if inherit else None)
    layer = choices.layer if choices.layer is not None else (opts.get("layer") if inherit else None)
    extra = choices.extra or (dict(opts.get("extra", {})) if inherit else {})
    precision = choices.precision or (inherit.precision if inherit else DEFAULT_PRECISION)
    if precision == "auto":  # an existing index keeps its mode; a new one gets this machine's fastest
        precision = inherit.precision if inherit else choose(
            encoders.entry(name).load_class().precision_cosine, choices.device)
    load_from = model if choices.model is not None or inherit is None else recorded_model(inherit)
    options = EncoderOptions(model=load_from, layer=layer, device=choices.device, precision=precision, extra=extra)
    encoder = _build(name, options, inherit if choices.model is None else None)
    sr = encoder.sample_rate
    window = to_samples(choices.window_s, sr) if choices.window_s else (
        inherit.window_samples if inherit else to_samples(encoder.default_window_s, sr))
    hop = to_samples(choices.hop_s, sr) if choices.hop_s else (
        inherit.hop_samples if inherit else to_samples(min(encoder.default_hop_s, window / sr), sr))
    if 0 < window < hop:  # say it in seconds, the user's unit (check_window speaks samples)
        raise InputError(f"the hop ({hop / sr:g} s) must not exceed the window ({window / sr:g} s); "
                         "pass a shorter --hop-s or a longer --window-s")
    check_window(window, hop)
    limit = getattr(encoder, "check_window", None)
    if limit is not None:  # e.g. CLAP cannot see more than 10 s: refuse at index time, not per batch
        limit(window / sr)
    pooling = choices.pooling or (inherit.pooling if inherit else encoder.default_pooling)  # Recipe checks both
    post = choices.postprocess or (inherit.postprocess if inherit else DEFAULT_POSTPROCESS)
    if choices.silence_db is not None:
        silence = None if choices.silence_db == float("-inf") else float(choices.silence_db)
    else:
        silence = inherit.silence_db if inherit else DEFAULT_SILENCE_DB
    recipe = Recipe(
        encoder=name,
        encoder_options={"model": model, "layer": layer, "extra": extra},
        encoder_params=encoder.recipe(),
        sample_rate=sr, window_samples=window, hop_samples=hop,
        pooling=pooling, postprocess=post, precision=precision,
        frame_dim=encoder.dim, dim=pooled_dim(pooling, encoder.dim), silence_db=silence,
    )
    return encoder, recipe


def encoder_for(recipe: Recipe, device: str = "cpu", *, index: str | Path | None = None,
                corpus: str | Path | None = None, precision: str | None = None) -> Encoder:
    """Load the encoder an index was built with (for queries).

    ``index`` and ``corpus`` only complete the re-point command in the error raised when
    the checkpoint has moved. ``precision`` overrides the recipe's (fine-tuning trains in fp32).
    """
    o = recipe.encoder_options
    options = EncoderOptions(model=recorded_model(recipe), layer=o.get("layer"), device=device,
                             precision=precision or recipe.precision, extra=o.get("extra", {}))
    return _build(recipe.encoder, options, recipe, index=index, corpus=corpus)


def recorded_model(recipe: Recipe) -> str | None:
    """The checkpoint to load for ``recipe``: its ``--model``, else the local checkpoint the encoder
    recorded (a default or ``RETRIEVE_<ENCODER>_MODEL`` path, absolute), else None (the family default)."""
    model = recipe.encoder_options.get("model")
    recorded = recipe.encoder_params.get("checkpoint")
    if model is None and isinstance(recorded, str) and Path(recorded).is_absolute():
        return recorded
    return model


def _build(name: str, options: EncoderOptions, stored: Recipe | None, *, index: str | Path | None = None,
           corpus: str | Path | None = None) -> Encoder:
    """``encoders.build``; when ``stored``'s local checkpoint is gone, say it moved and how to re-point it.

    Raises:
        WeightsNotFoundError: the checkpoint an index was built from is no longer where it was
            recorded (with the re-point command, or why there is none), or any other missing weights.
    """
    try:
        return encoders.build(name, options)
    except WeightsNotFoundError as exc:
        where = options.model
        if stored is None or not where or not is_local(where) or Path(where).expanduser().exists():
            raise
        if stored.digest:
            command = (f"retrieve index {corpus or 'CORPUS'} --index {index or 'INDEX'} "
                       f"--model NEW_PATH")
            fix = (f"if it moved, re-point the index at its new place with `{command}`: the weights are "
                   f"checked against the recorded digest (sha256 {stored.digest}) and nothing is re-embedded")
        else:
            fix = ("this index was made before checkpoint digests were recorded, so a new place cannot be "
                   "checked: put the checkpoint back there, or build a new index")
        raise WeightsNotFoundError(
            f"the {name} checkpoint this index was built from is no longer at {where} (moved or deleted); {fix}"
        ) from exc
