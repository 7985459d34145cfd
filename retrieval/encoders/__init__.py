"""Encoder families and their registry (see ``registry.py``)."""

from retrieval.encoders.base import Encoder, EncoderOptions, FrameEmbeddings
from retrieval.encoders.registry import build, entry, names, text_encoders

__all__ = ["Encoder", "EncoderOptions", "FrameEmbeddings", "build", "entry", "names", "text_encoders"]
