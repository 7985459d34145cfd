"""The server keeps answering while `retrieve index` updates its index in another process,
and picks up the new version without a restart."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from retrieval import synth  # noqa: E402
from retrieval.index import Index  # noqa: E402
from retrieval.serve.app import create_app  # noqa: E402
from retrieval.serve.indexes import IndexSet, LiveIndex  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SR = 16000


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    corpus = tmp_path / "corpus"
    synth.write_demo_corpus(corpus, per_class=2)
    Index.build(corpus, tmp_path / "ix").close()
    return corpus, tmp_path / "ix"


def add_files(corpus: Path, n: int = 3) -> list[str]:
    """New files of a sound the index has not seen: 3 kHz tone bursts."""
    (corpus / "beeps").mkdir()
    out = []
    for i in range(n):
        t = np.arange(int((1.0 + 0.3 * i) * SR)) / SR
        x = 0.4 * np.sin(2 * np.pi * 3000 * t) * (np.sin(2 * np.pi * 4 * t) > 0)
        sf.write(corpus / "beeps" / f"beep_{i}.wav", x.astype(np.float32), SR, subtype="PCM_16")
        out.append(f"beeps/beep_{i}.wav")
    return out


def test_requests_never_fail_while_retrieve_index_adds_files(small: tuple[Path, Path]) -> None:
    corpus, ix = small
    held = IndexSet([ix], check_every_s=0.0)
    client = TestClient(create_app(held))
    query = corpus / "tone" / "tone_00.wav"
    probe = {"file": ("q.wav", query.read_bytes())}
    statuses: list[int] = []
    paths_seen: list[set[str]] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            r = client.post("/api/search", files=probe, data={"k": 50})
            statuses.append(r.status_code)
            if r.status_code == 200:
                paths_seen.append({h["path"] for h in r.json()})
            statuses.append(client.get("/api/info").status_code)

    before = held.get(None).current().taken_at
    new = add_files(corpus)
    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        during = len(statuses)
        ingest = subprocess.run([sys.executable, "-m", "retrieval", "index", str(corpus), "--index", str(ix)],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert ingest.returncode == 0, ingest.stderr
        during = len(statuses) - during
        deadline = time.monotonic() + 30
        while not set(new) <= (paths_seen[-1] if paths_seen else set()) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        worker.join(60)
        held.close()
    assert during > 0, "no request ran while the ingest did"
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    assert set(new) <= paths_seen[-1], "the new files never showed up in search results"
    assert not set(new) & paths_seen[0]
    assert held.get(None).current().taken_at > before


def test_a_writer_holding_the_index_keeps_the_old_version_serving(small: tuple[Path, Path]) -> None:
    corpus, ix = small
    live = LiveIndex(ix)
    first = live.current()
    holder = subprocess.Popen(  # a writer in another process: it holds the live database until told to go
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from retrieval.store import Store\n"
         "with Store.open(Path(sys.argv[1]), writable=True) as s:\n"
         "    s.db.set('serve_test', 'x'); print('ready', flush=True); sys.stdin.read()",
         str(ix)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert live.refresh() is False  # nothing newer is published while the writer is at work
        with live.use() as snap:  # the previous version still answers
            assert snap is first
            assert len(snap.index.search(corpus / "tone" / "tone_00.wav", k=3)) == 3
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0
    assert live.refresh() is True  # the writer published what it committed when it closed
    assert live.current() is not first and live.last_refresh_error is None
    assert live.current().version > first.version
    assert first.index.store.lease._fd is None  # the old one is closed, its lease released, once no request holds it
    live.close()
