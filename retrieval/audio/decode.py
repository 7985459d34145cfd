"""Decode audio to mono float32 at a target rate, streamed in blocks.

soundfile (libsndfile) decodes everything it knows; PyAV, when installed, decodes
the rest (m4a, aac, ...). Channels are averaged to mono, and soxr resamples in
streaming mode, so a 1-hour file never sits in memory whole. Ingest and queries go
through the same :func:`stream`, so the same file always gives the same samples.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from retrieval.audio.discover import AV_EXTENSIONS, has_pyav
from retrieval.errors import AudioError

#: Input frames read per block: about 6 s at 44.1 kHz, 1.4 s at 192 kHz.
BLOCK_FRAMES = 1 << 18
#: Most samples one resampling step may produce (1 MB of float32): input blocks are fed to soxr
#: in slices that stay under it, so a 1 Hz file upsampled 16,000x never expands a whole block at once.
RESAMPLE_OUT_SAMPLES = 1 << 18
#: soxr quality; "HQ" is soxr's default and transparent for analysis.
RESAMPLE_QUALITY = "HQ"


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds before decoding.

    Attributes:
        sample_rate: native rate in Hz.
        channels: channel count.
        frames: samples per channel (an estimate for some compressed formats).
        format: container / codec name.
        declared_frames: samples per channel the header promises, where the format states
            it exactly (WAV, AIFF, FLAC); None where it does not. libsndfile reports
            ``frames`` from the bytes present, so this is read from the header itself.
    """

    sample_rate: int
    channels: int
    frames: int
    format: str
    declared_frames: int | None = None

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


@dataclass
class DecodeReport:
    """Facts found while decoding, filled in as :func:`stream` runs.

    Attributes:
        nonfinite: NaN/Inf input samples that were replaced by 0.
        out_samples: mono samples produced at the target rate.
        in_frames: frames decoded at the file's own rate, before resampling.
    """

    nonfinite: int = 0
    out_samples: int = 0
    in_frames: int = 0


#: A truncated file that still holds at least this much audio is indexed with a warning;
#: below it, what is left says nothing about the sound and the file is an error.
MIN_TRUNCATED_S = 0.1


def truncation(info: AudioInfo, report: DecodeReport) -> tuple[str, str] | None:
    """``(severity, reason)`` when fewer frames decoded than the header declares, else None.

    Severity is ``warning`` when at least :data:`MIN_TRUNCATED_S` seconds decoded (the file
    is indexed as what it holds) and ``error`` below that.
    """
    declared = info.declared_frames
    if not declared or report.in_frames >= declared or info.sample_rate <= 0:
        return None
    got_s, want_s = report.in_frames / info.sample_rate, declared / info.sample_rate
    reason = (f"truncated: the header declares {declared} frames ({want_s:.3f} s) but {report.in_frames} "
              f"decoded ({got_s:.4f} s)")
    if got_s < MIN_TRUNCATED_S:
        return "error", (f"{reason}, under the {MIN_TRUNCATED_S:g} s minimum, so not indexed; "
                         "copy or export the file again")
    return "warning", f"{reason}; indexed as the {got_s:.3f} s it holds"


def probe(path: Path) -> AudioInfo:
    """Read a file's header. Raises :class:`AudioError` with the reason when it is not audio."""
    with open_audio(path) as source:
        return source.info


class AudioSource:
    """An audio file opened once: its header (:attr:`info`, declared length included) and its decoder.

    libsndfile formats are opened through one file descriptor: the header, the frame count the
    header declares and the samples all come from it (one ``open``, one libsndfile handle per
    file; :func:`probe` followed by :func:`stream` would open it three times). PyAV formats are
    probed here and opened again to decode. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: Path, info: AudioInfo, handle: sf.SoundFile | None = None,
                 fd: int | None = None) -> None:
        self.path = path if isinstance(path, Path) else Path(path)
        self.info = info
        self._handle = handle
        self._fd = fd
        self._read = False  # the handle has been read from, so a new read seeks first

    def blocks(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """``(n, channels)`` float32 blocks of frames ``start:stop`` at the file's own rate."""
        if self._handle is None:
            return _blocks_av(self.path, start, stop)
        return self._blocks_sndfile(start, stop)

    def _blocks_sndfile(self, start: int, stop: int | None) -> Iterator[np.ndarray]:
        f = self._handle
        try:
            if start or self._read:
                f.seek(min(start, f.frames))
            self._read = True
            remaining = None if stop is None else max(stop - start, 0)
            while remaining is None or remaining > 0:
                n = BLOCK_FRAMES if remaining is None else min(BLOCK_FRAMES, remaining)
                block = f.read(n, dtype="float32", always_2d=True)
                if not len(block):
                    break
                if remaining is not None:
                    remaining -= len(block)
                yield block
                if len(block) < n:  # soundfile reads at most what is left: the end (no empty read to find it)
                    break
        except AudioError:
            raise
        except Exception as exc:
            raise AudioError(f"cannot decode {self.path.name}: {_reason(exc)}") from exc

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> AudioSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_audio(path: Path) -> AudioSource:
    """Open ``path`` and read its header. Raises :class:`AudioError` with the reason when it is not audio."""
    path = path if isinstance(path, Path) else Path(path)
    if path.suffix.lower() in AV_EXTENSIONS:
        return AudioSource(path, _probe_av(path))
    try:
        fd = os.open(path, os.O_RDONLY)  # encoded as os.fsencode does: any name, UTF-8 or not
    except OSError as exc:
        raise AudioError(f"cannot decode {path.name}: {exc.strerror or _reason(exc)}") from exc
    try:
        handle = sf.SoundFile(fd, closefd=False)  # libsndfile reads from the descriptor's offset, 0
    except Exception as exc:  # libsndfile raises several types; all mean "not readable audio"
        os.close(fd)
        if has_pyav():
            return AudioSource(path, _probe_av(path))
        # libsndfile's own words: its message would name the descriptor, not the file
        reason = exc.error_string if isinstance(exc, sf.LibsndfileError) else _reason(exc)
        raise AudioError(f"cannot decode {path.name}: {reason}") from exc
    source = AudioSource(path, _info_of(handle, fd), handle, fd)
    if source.info.sample_rate <= 0 or source.info.channels <= 0:
        source.close()
        raise AudioError(f"cannot decode {path.name}: header says {source.info.sample_rate} Hz, "
                         f"{source.info.channels} channels")
    return source


def _info_of(handle: sf.SoundFile, fd: int) -> AudioInfo:
    """The :class:`AudioInfo` of an open libsndfile handle; the declared length is read through ``fd``."""
    fmt, frames = handle.format, int(handle.frames)
    return AudioInfo(int(handle.samplerate), int(handle.channels), frames, f"{fmt}/{handle.subtype}",
                     declared_frames=_declared_frames(fd, fmt, frames))


def stream(
    path: Path,
    target_sr: int,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    report: DecodeReport | None = None,
    info: AudioInfo | None = None,
    tap: Callable[[np.ndarray], None] | None = None,
    source: AudioSource | None = None,
) -> Iterator[np.ndarray]:
    """Yield mono float32 blocks at ``target_sr``.

    Args:
        path: audio file.
        target_sr: output rate in Hz.
        start_s, end_s: optional crop, in seconds of the source.
        report: filled with the non-finite count and output length as blocks are read.
        info: the file's :func:`probe` result, when the caller already has it.
        tap: called with every block as read, ``(n, channels)`` float32 at the file's own
            rate, before the mix to mono (copy frames are computed from it in the same pass).
        source: the file already opened by :func:`open_audio` (``path`` and ``info`` are then
            not used); the caller closes it.

    Raises:
        AudioError: the file cannot be decoded, or the crop is empty.
    """
    if source is not None:
        yield from _stream(source, target_sr, start_s, end_s, report, tap)
        return
    if info is not None and (Path(path).suffix.lower() in AV_EXTENSIONS or info.format.startswith("av:")):
        yield from _stream(AudioSource(Path(path), info), target_sr, start_s, end_s, report, tap)
        return
    with open_audio(path) as opened:
        if info is not None:  # the header the caller read before: the rates and crop follow it
            opened.info = info
        yield from _stream(opened, target_sr, start_s, end_s, report, tap)


def _stream(source: AudioSource, target_sr: int, start_s: float | None, end_s: float | None,
            report: DecodeReport | None, tap: Callable[[np.ndarray], None] | None) -> Iterator[np.ndarray]:
    """:func:`stream` of an open source."""
    info = source.info
    report = report if report is not None else DecodeReport()
    start = 0 if start_s is None else int(round(start_s * info.sample_rate))
    stop = None if end_s is None else int(round(end_s * info.sample_rate))
    if start < 0 or (stop is not None and stop <= start):
        raise AudioError(f"empty crop of {source.path.name}: start {start_s} s, end {end_s} s")
    blocks = source.blocks(start, stop)
    resampler = None if info.sample_rate == target_sr else _take_resampler(info.sample_rate, target_sr)
    for block in blocks:
        report.in_frames += len(block)
        if tap is not None:
            tap(block)
        mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0].astype(np.float32)
        bad = ~np.isfinite(mono)
        if bad.any():
            report.nonfinite += int(bad.sum())
            mono = np.where(bad, np.float32(0.0), mono)
        for out in _resampled(resampler, mono, info.sample_rate, target_sr):
            report.out_samples += out.size
            yield out
    if resampler is not None:
        for tail in _pieces(resampler.resample_chunk(np.zeros(0, np.float32), last=True)):
            report.out_samples += tail.size
            yield tail
        _give_back_resampler(info.sample_rate, target_sr, resampler)


#: Idle soxr streams by ``(input rate, output rate)``, cleared and ready: setting one up costs
#: about as much as resampling a one-second clip.
_RESAMPLERS: dict[tuple[int, int], list[soxr.ResampleStream]] = {}
#: Idle streams kept per pair of rates.
_RESAMPLERS_KEPT = 4


def _take_resampler(in_sr: int, out_sr: int) -> soxr.ResampleStream:
    """A soxr stream from ``in_sr`` to ``out_sr`` in its initial state (a new one, or one given back)."""
    try:
        return _RESAMPLERS.get((in_sr, out_sr), []).pop()
    except IndexError:
        return soxr.ResampleStream(in_sr, out_sr, 1, dtype="float32", quality=RESAMPLE_QUALITY)


def _give_back_resampler(in_sr: int, out_sr: int, resampler: soxr.ResampleStream) -> None:
    """Keep a stream that has flushed its last samples, reset to its initial state by ``soxr_clear``
    (it then gives the same output, bit for bit, as a new stream: ``tests/audio/test_decode.py``)."""
    idle = _RESAMPLERS.setdefault((in_sr, out_sr), [])
    if len(idle) < _RESAMPLERS_KEPT:
        resampler.clear()
        idle.append(resampler)


def _resampled(resampler: soxr.ResampleStream | None, mono: np.ndarray, in_sr: int,
               out_sr: int) -> Iterator[np.ndarray]:
    """``mono`` at ``out_sr``, in pieces of about :data:`RESAMPLE_OUT_SAMPLES` samples at most.

    The slicing depends only on the two rates and the block, so a file is cut the same
    way every time it is decoded; soxr's stream carries its state across slices.
    """
    if resampler is None:
        if mono.size:
            yield mono
        return
    step = max(1, RESAMPLE_OUT_SAMPLES * in_sr // out_sr)
    for a in range(0, mono.size, step):
        yield from _pieces(resampler.resample_chunk(mono[a:a + step]))


def _pieces(out: np.ndarray) -> Iterator[np.ndarray]:
    """``out`` as views of at most :data:`RESAMPLE_OUT_SAMPLES` samples.

    soxr releases its output in bursts when the ratio is extreme (about 13 M samples at a
    time for 1 Hz -> 16 kHz, whatever the slice fed in); handing them on in pieces keeps
    every later copy (windowing) small.
    """
    for a in range(0, out.size, RESAMPLE_OUT_SAMPLES):
        yield out[a:a + RESAMPLE_OUT_SAMPLES]


def load(path: Path, target_sr: int, *, start_s: float | None = None, end_s: float | None = None) -> np.ndarray:
    """Decode a whole (cropped) file to ``(samples,)`` float32 mono at ``target_sr``.

    For query clips; ingest streams instead. Raises :class:`AudioError` on empty audio.
    """
    blocks = list(stream(path, target_sr, start_s=start_s, end_s=end_s))
    audio = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if audio.size == 0:
        raise AudioError(f"{Path(path).name} holds no audio samples")
    return audio


def _declared_frames(fd: int, fmt: str, frames: int) -> int | None:
    """Frames the header of a WAV, AIFF or FLAC file promises (None for other formats, or unreadable).

    Read through ``fd`` with ``pread``, so the descriptor's offset (libsndfile's) does not move.
    """
    if fmt == "FLAC":
        return frames or None  # STREAMINFO's total, which libsndfile reports as is
    try:
        if fmt in ("WAV", "WAVEX"):
            return _riff_frames(_FdReader(fd))
        if fmt in ("AIFF", "AIFC"):
            return _aiff_frames(_FdReader(fd))
    except (OSError, struct.error, ValueError):
        return None
    return None


class _FdReader:
    """``read`` and relative ``seek`` over a file descriptor by ``os.pread``: its offset never moves.

    The first :data:`_HEAD_BYTES` bytes are read at once (where a header's chunks usually lie).
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pos = 0
        self._head = os.pread(fd, _HEAD_BYTES, 0)

    def read(self, n: int) -> bytes:
        end = self._pos + n
        if end <= len(self._head) or len(self._head) < _HEAD_BYTES:  # inside the head, or past the file's end
            data = self._head[self._pos:end]
        else:
            data = os.pread(self._fd, n, self._pos)
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = offset if whence == 0 else self._pos + offset
        return self._pos


#: Bytes of a file's start read in one call when looking for its declared length.
_HEAD_BYTES = 4096
#: Chunks read past before giving up on finding a header's frame count.
_MAX_CHUNKS = 64


def _riff_frames(f: _FdReader) -> int | None:
    """``data`` chunk bytes / ``fmt `` block align of a RIFF/WAVE file; None when unknown."""
    if f.read(4) != b"RIFF" or (f.read(4), f.read(4))[1] != b"WAVE":
        return None
    block_align = None
    for _ in range(_MAX_CHUNKS):
        head = f.read(8)
        if len(head) < 8:
            return None
        cid, size = head[:4], struct.unpack("<I", head[4:])[0]
        if cid == b"fmt ":
            body = f.read(size)
            block_align = struct.unpack("<H", body[12:14])[0]
            f.seek(size & 1, 1)
        elif cid == b"data":
            if not block_align or size in (0, 0xFFFFFFFF):  # streaming writers leave the size open
                return None
            return size // block_align
        else:
            f.seek(size + (size & 1), 1)
    return None


def _aiff_frames(f: _FdReader) -> int | None:
    """``numSampleFrames`` of the ``COMM`` chunk of an AIFF/AIFC file; None when unknown."""
    if f.read(4) != b"FORM" or (f.read(4), f.read(4))[1] not in (b"AIFF", b"AIFC"):
        return None
    for _ in range(_MAX_CHUNKS):
        head = f.read(8)
        if len(head) < 8:
            return None
        cid, size = head[:4], struct.unpack(">I", head[4:])[0]
        if cid == b"COMM":
            return struct.unpack(">I", f.read(6)[2:6])[0]
        f.seek(size + (size & 1), 1)
    return None


def _probe_av(path: Path) -> AudioInfo:
    try:
        import av
    except ImportError:
        raise AudioError(
            f"cannot decode {path.name}: {path.suffix} needs the optional PyAV decoder; "
            "install it with `pip install av` (or the project's [av] extra)"
        ) from None
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"cannot decode {path.name}: no audio stream")
            st = container.streams.audio[0]
            rate = int(st.codec_context.sample_rate or st.rate or 0)
            seconds = float(st.duration * st.time_base) if st.duration else (container.duration or 0) / 1e6
            channels = int(st.codec_context.channels)
            if rate <= 0:
                raise AudioError(f"cannot decode {path.name}: unknown sample rate")
            return AudioInfo(rate, channels, int(round(seconds * rate)), f"av:{st.codec_context.name}")
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(f"cannot decode {path.name}: {_reason(exc)}") from exc


def _blocks_av(path: Path, start: int, stop: int | None) -> Iterator[np.ndarray]:
    import av

    try:
        with av.open(str(path)) as container:
            st = container.streams.audio[0]
            rate = int(st.codec_context.sample_rate)
            # Keep the native rate: soxr does the resampling, as for every other format.
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            pos = 0
            for frame in container.decode(st):
                for out in resampler.resample(frame):
                    block = out.to_ndarray().reshape(-1, 1).astype(np.float32)
                    lo, hi = pos, pos + len(block)
                    pos = hi
                    a = max(start - lo, 0)
                    b = len(block) if stop is None else min(stop - lo, len(block))
                    if b > a:
                        yield block[a:b]
                    if stop is not None and pos >= stop:
                        return
    except Exception as exc:
        raise AudioError(f"cannot decode {path.name}: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
