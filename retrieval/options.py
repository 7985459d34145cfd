"""Every named option set, declared once: a ``Literal`` type and the tuple of its values.

The library types its arguments with the ``Literal``; the CLI's ``click.Choice`` lists read
the tuples, so a new mode is added here and nowhere else. A value is checked once, with
:func:`check_choice`, when the object that carries it is built (``Recipe``,
``configure.Choices``, ``IngestOptions``); later code trusts it.

This module imports nothing beyond typing and :mod:`retrieval.errors`, so the CLI can offer
the choices without loading numpy.
"""

from __future__ import annotations

from typing import Literal, TypeVar, get_args

from retrieval.errors import ChoiceError

#: Separator between the labels of a multi-label cell (``"dog;bark"``): kNN, evaluation, zero-shot.
LABEL_SEP = ";"

#: Frames -> window and file vectors (:mod:`retrieval.pooling` documents each mode).
PoolingMode = Literal["mean", "max", "meanmax", "meanstd", "pyramid", "none"]
POOLING_MODES: tuple[PoolingMode, ...] = get_args(PoolingMode)

#: Label-free post-processing of pooled vectors (:mod:`retrieval.postprocess`).
PostprocessMode = Literal["none", "center", "whiten"]
POSTPROCESS_MODES: tuple[PostprocessMode, ...] = get_args(PostprocessMode)
#: What an index is post-processed with unless the user or the index says otherwise.
DEFAULT_POSTPROCESS: PostprocessMode = "whiten"

#: FAISS index kinds (:mod:`retrieval.store.vectors`).
IndexType = Literal["flat", "hnsw", "ivfpq"]
INDEX_TYPES: tuple[IndexType, ...] = get_args(IndexType)
#: What ``--index-type`` accepts: a kind, or ``auto`` (picked by corpus size).
IndexTypeChoice = Literal["auto", "flat", "hnsw", "ivfpq"]
INDEX_TYPE_CHOICES: tuple[IndexTypeChoice, ...] = get_args(IndexTypeChoice)

#: Inference precision of model encoders (:mod:`retrieval.encoders.precision`); a recipe holds one.
Precision = Literal["fp32", "fp16", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
#: What a user may ask for: a precision, or ``auto`` (resolved before a recipe is made).
PrecisionChoice = Literal["fp32", "fp16", "bf16", "int8", "auto"]
PRECISION_CHOICES: tuple[PrecisionChoice, ...] = get_args(PrecisionChoice)

#: Vector levels in the store: one per analysis window or per file.
Level = Literal["window", "file"]
LEVELS: tuple[Level, ...] = get_args(Level)

#: ``retrieve export``: which vectors (searched = post-processed and normalised, raw = as stored)
#: and which levels (the store's two, or both).
VectorKind = Literal["searched", "raw"]
VECTOR_KINDS: tuple[VectorKind, ...] = get_args(VectorKind)
ExportLevel = Literal["file", "window", "both"]
EXPORT_LEVELS: tuple[ExportLevel, ...] = get_args(ExportLevel)

#: ``retrieve locate --match``: windows that sound like the clip, or the clip's own recording.
Match = Literal["similar", "copy"]
MATCH_MODES: tuple[Match, ...] = get_args(Match)

#: ``retrieve index --engine``: embed in this process, or on a Ray cluster.
Engine = Literal["local", "ray"]
ENGINES: tuple[Engine, ...] = get_args(Engine)

#: Adaptation (:mod:`retrieval.heads`, :mod:`retrieval.adapt`): the head trained on frozen window
#: vectors, and how ``retrieve suggest`` picks the next windows to label.
HeadKind = Literal["linear", "mlp"]
HEAD_KINDS: tuple[HeadKind, ...] = get_args(HeadKind)
Strategy = Literal["margin", "top", "random"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
#: Default weight of each unlabelled window counted as a negative when a head is trained.
WEAK_WEIGHT = 0.1

#: kNN vote weighting (:mod:`retrieval.knn`).
Weighting = Literal["similarity", "uniform"]
WEIGHTINGS: tuple[Weighting, ...] = get_args(Weighting)

#: How bad a row of the ``errors`` table is: out of the index (``error``) or in it with a caveat.
Severity = Literal["error", "warning"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)

#: Row output formats of the CLI (:mod:`retrieval.render`).
Output = Literal["table", "json", "csv", "nl"]
OUTPUTS: tuple[Output, ...] = get_args(Output)

_T = TypeVar("_T", bound=str)


def check_choice(name: str, value: object, choices: tuple[_T, ...]) -> _T:
    """Return ``value`` if it is one of ``choices``.

    Args:
        name: what the value is, as the user would say it (``pooling``, ``--index-type``).
        value: the value to check.
        choices: the valid values, e.g. :data:`POOLING_MODES`.

    Raises:
        ChoiceError: ``value`` is not one of ``choices``; the message lists them.
    """
    if isinstance(value, str) and value in choices:
        return value  # type: ignore[return-value]
    raise ChoiceError(name, value, choices)
