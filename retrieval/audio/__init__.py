"""Audio in: discover files -> decode -> mono -> resample -> windows (integer samples)."""

from retrieval.audio.decode import AudioInfo, DecodeReport, load, probe, stream
from retrieval.audio.discover import FoundFile, audio_extensions, discover
from retrieval.audio.windows import Window, cut_stream, plan_windows, rms_db, to_samples

__all__ = [
    "AudioInfo", "DecodeReport", "FoundFile", "Window", "audio_extensions", "cut_stream", "discover",
    "load", "plan_windows", "probe", "rms_db", "stream", "to_samples",
]
