"""Encoder families and their registry (see ``registry.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from retrieval._lazy import attach

#: Public name -> the module that defines it. Imported on first use (PEP 562), so that
#: importing one light submodule (or the package for its docstring) loads nothing heavy.
_HOME = {
    "Encoder": "retrieval.encoders.base",
    "EncoderOptions": "retrieval.encoders.base",
    "FrameEmbeddings": "retrieval.encoders.base",
    "build": "retrieval.encoders.registry",
    "entry": "retrieval.encoders.registry",
    "names": "retrieval.encoders.registry",
    "text_encoders": "retrieval.encoders.registry",
}

if TYPE_CHECKING:
    from retrieval.encoders.base import Encoder, EncoderOptions, FrameEmbeddings
    from retrieval.encoders.registry import build, entry, names, text_encoders

__all__ = ["Encoder", "EncoderOptions", "FrameEmbeddings", "build", "entry", "names", "text_encoders"]

__getattr__, __dir__ = attach(__name__, _HOME)
