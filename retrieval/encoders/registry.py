"""One registry of encoder families, with stable names and lazy imports.

Importing this module imports neither torch nor transformers: each entry names the
module and class that implement it, and the module is imported on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from retrieval.errors import EncoderError, UnknownNameError

if TYPE_CHECKING:  # base imports numpy; `retrieve --help` reads the names here and needs none of it
    from retrieval.encoders.base import Encoder, EncoderOptions


@dataclass(frozen=True)
class EncoderEntry:
    """A registered encoder family.

    Attributes:
        name: stable CLI name.
        target: ``"module:Class"`` implementing :class:`Encoder`.
        summary: one line for ``retrieve models``.
        default_model: default checkpoint (hub id or path), None when no weights are needed.
        has_text: whether the family has a text tower.
        embeds_in_workers: ingest's decoding workers also run this encoder and send back
            vectors, so the main process only writes. For encoders that need no weights,
            import neither torch nor transformers, and are bit-exact batch invariant (the
            log-mel baseline); a model stays in the main process, one copy of its weights.
        worker_preload: modules the encoder imports when it first runs, which the workers'
            fork server imports once up front (instead of once in every worker).
    """

    name: str
    target: str
    summary: str
    default_model: str | None
    has_text: bool = False
    embeds_in_workers: bool = False
    worker_preload: tuple[str, ...] = ()

    def load_class(self) -> type[Encoder]:
        module_name, _, class_name = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise EncoderError(
                f"encoder {self.name!r} needs a package that is not installed ({exc}); "
                f"reinstall with `pip install -e .` or pick another encoder"
            ) from exc
        return getattr(module, class_name)


_REGISTRY: dict[str, EncoderEntry] = {}


def register(entry: EncoderEntry) -> None:
    """Add a family. Registering a name twice is an error."""
    if entry.name in _REGISTRY:
        raise EncoderError(f"encoder {entry.name!r} is already registered ({_REGISTRY[entry.name].target})")
    _REGISTRY[entry.name] = entry


def names() -> list[str]:
    """Registered encoder names, in registration order."""
    return list(_REGISTRY)


def entry(name: str) -> EncoderEntry:
    """The entry for ``name``; an unknown name lists the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError(f"unknown encoder {name!r}; choose one of: {', '.join(_REGISTRY)}") from None


def worker_embedded() -> list[str]:
    """Names of the families ingest's decoding workers run themselves (``embeds_in_workers``)."""
    return [e.name for e in _REGISTRY.values() if e.embeds_in_workers]


def text_encoders() -> list[str]:
    """Names of the families that can embed text."""
    return [e.name for e in _REGISTRY.values() if e.has_text]


def build(name: str, options: EncoderOptions | None = None, **kwargs: Any) -> Encoder:
    """Instantiate encoder ``name`` with ``options`` (or keyword fields of :class:`EncoderOptions`)."""
    from retrieval.encoders.base import EncoderOptions

    options = options or EncoderOptions(**kwargs)
    return entry(name).load_class()(options)


register(EncoderEntry(
    "logmel", "retrieval.encoders.logmel:LogMelEncoder",
    "spectral baseline: log-mel / MFCC statistics, no weights needed", None, embeds_in_workers=True,
    worker_preload=("retrieval.encoders.logmel",),
))
register(EncoderEntry(
    "wav2vec2", "retrieval.encoders.wav2vec2:Wav2Vec2Encoder",
    "wav2vec2 / HuBERT / WavLM / data2vec-audio through transformers (speech)",
    "facebook/wav2vec2-base",
))
register(EncoderEntry(
    "beats", "retrieval.encoders.beats:BeatsEncoder",
    "BEATs (native implementation; official .pt checkpoints)", "BEATs_iter3_plus_AS2M.pt",
))
register(EncoderEntry(
    "clap", "retrieval.encoders.clap:ClapEncoder",
    "CLAP audio-text model through transformers (text search, zero-shot)",
    "laion/clap-htsat-unfused", has_text=True,
))
