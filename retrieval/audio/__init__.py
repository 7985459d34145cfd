"""Audio in: discover files -> decode -> mono -> resample -> windows (integer samples)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from retrieval._lazy import attach

#: Public name -> the module that defines it. Imported on first use (PEP 562), so that
#: importing one light submodule (or the package for its docstring) loads nothing heavy.
_HOME = {
    "AudioInfo": "retrieval.audio.decode",
    "DecodeReport": "retrieval.audio.decode",
    "FoundFile": "retrieval.audio.discover",
    "Window": "retrieval.audio.windows",
    "audio_extensions": "retrieval.audio.discover",
    "cut_stream": "retrieval.audio.windows",
    "discover": "retrieval.audio.discover",
    "load": "retrieval.audio.decode",
    "plan_windows": "retrieval.audio.windows",
    "probe": "retrieval.audio.decode",
    "rms_db": "retrieval.audio.windows",
    "stream": "retrieval.audio.decode",
    "to_samples": "retrieval.audio.windows",
}

if TYPE_CHECKING:
    from retrieval.audio.decode import AudioInfo, DecodeReport, load, probe, stream
    from retrieval.audio.discover import FoundFile, audio_extensions, discover
    from retrieval.audio.windows import Window, cut_stream, plan_windows, rms_db, to_samples

__all__ = ["AudioInfo", "DecodeReport", "FoundFile", "Window", "audio_extensions", "cut_stream", "discover", "load", "plan_windows", "probe", "rms_db", "stream", "to_samples"]

__getattr__, __dir__ = attach(__name__, _HOME)
