"""The server's worker processes: the same bytes and vectors as in-process work, and no orphans."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from retrieval.errors import AudioError, InputError  # noqa: E402
from retrieval.index import Index  # noqa: E402
from retrieval.serve.app import create_app  # noqa: E402
from retrieval.serve.indexes import IndexSet  # noqa: E402
from retrieval.serve.media import render_spectrogram  # noqa: E402
from retrieval.serve.workers import Workers  # noqa: E402
from tests.serve_fixtures import SR, build_index, long_audio  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_index(tmp_path_factory.mktemp("workers"))


@pytest.fixture(scope="module")
def workers() -> Workers:
    w = Workers(1)
    w.start()
    yield w
    w.close()


def wav_bytes(audio: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_work_runs_in_another_process_with_the_same_result(built: tuple[Path, Path], workers: Workers) -> None:
    assert workers._run(os.getpid) != os.getpid()
    assert Workers(0)._run(os.getpid) == os.getpid()
    path = built[0] / "long" / "long_b.wav"
    assert workers.thumbnail(path, 12.0, (1.0, 5.0), 99, 40) == render_spectrogram(path, 12.0, (1.0, 5.0), 99, 40)


def test_workers_run_at_a_lower_cpu_priority_than_the_server(workers: Workers) -> None:
    from retrieval.serve.workers import WORKER_NICENESS

    here = os.nice(0)
    assert workers._run(os.nice, 0) == min(19, here + WORKER_NICENESS)
    assert os.nice(0) == here  # the server's own priority is left alone


def test_an_upload_embedded_in_a_worker_is_the_vector_the_index_gives(built: tuple[Path, Path],
                                                                      workers: Workers) -> None:
    clip = long_audio("long_b")[: 4 * SR]
    with Index.open(built[1], snapshot_only=True) as ix:
        audio, raw = workers.upload(wav_bytes(clip), "q.wav", ix.recipe, 600.0, 0.5, 3.5, index_root=built[1],
                                    corpus_root=None, embed_here=True)
        assert audio is None and raw is not None  # logmel needs no weights: embedded in the worker
        here = ix.embed(wav_bytes_path(built[0].parent / "q.wav", clip), start_s=0.5, end_s=3.5)
        np.testing.assert_array_equal(ix.store.postprocess.apply(raw[None])[0], here)
        audio, raw = workers.upload(wav_bytes(clip), "q.wav", ix.recipe, 600.0, None, None, index_root=built[1],
                                    corpus_root=None, embed_here=False)
        assert raw is None and audio.shape == (4 * SR,) and audio.dtype == np.float32
    with pytest.raises(AudioError, match="not-audio.wav"):  # the decoder's reason crosses the process boundary
        workers.upload(b"RIFF but not a wave file at all", "not-audio.wav", ix.recipe, 600.0, None, None,
                       index_root=built[1], corpus_root=None, embed_here=True)
    with pytest.raises(InputError, match="0 \\(in the server process\\)"):
        Workers(-1)


def wav_bytes_path(path: Path, audio: np.ndarray) -> Path:
    sf.write(path, audio, SR, subtype="PCM_16")
    return path


def test_the_app_sends_uploads_and_thumbnails_to_its_workers(built: tuple[Path, Path]) -> None:
    held = IndexSet([built[1]])
    try:
        with TestClient(create_app(held, heavy_slots=1)) as client:
            workers = client.app.state.workers
            assert workers.processes == 1
            res = client.post("/api/search", files={"file": ("q.wav", wav_bytes(long_audio("long_b")[: 4 * SR]))},
                              data={"k": 3})
            assert res.status_code == 200 and res.json()[0]["path"] == "long/long_b.wav"
            assert workers._pool is not None  # the upload went to a worker process
            fid = res.json()[0]["file_id"]
            png = client.get(f"/api/files/{fid}/spectrogram.png", params={"start_s": 1.0, "end_s": 5.0})
            assert png.status_code == 200
            assert png.content == render_spectrogram(built[0] / "long" / "long_b.wav", 16.0, (1.0, 5.0), 360, 72)
        assert workers._pool is None  # closed with the app
        assert create_app(held, heavy_slots=1, heavy_processes=0).state.workers.processes == 0
    finally:
        held.close()


def test_workers_end_when_the_server_is_killed(tmp_path: Path) -> None:
    """A server killed by a signal never shuts its pool down; its workers must not outlive it
    (they would hold its stdout open, and its memory)."""
    code = ("import os, sys; from retrieval.serve.workers import Workers; w = Workers(1); w.start(); "
            "print(w._run(os.getpid), flush=True); os._exit(0)")
    log = tmp_path / "out.txt"
    # Files, not pipes: an orphaned worker holding a pipe would block the wait. stderr apart: the
    # resource tracker may warn there after the pid is printed.
    with log.open("w") as f, (tmp_path / "err.txt").open("w") as err:
        subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=f, stderr=err, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    worker = int(log.read_text().strip().splitlines()[-1])
    deadline = time.monotonic() + 30
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(worker), "the worker outlived its server"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")
