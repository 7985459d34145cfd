"""Reads while an ingest runs (issue 11, item 20): every read succeeds on the last published
snapshot, sees one consistent state, and sees the new files once the ingest finishes."""

import json
import shutil
import signal
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from retrieval import synth
from retrieval.cli import cli
from retrieval.errors import IndexLockedError
from retrieval.index import Index
from retrieval.ingest import ingest
from retrieval.store import Store
from retrieval.store.snapshot import SNAPSHOTS, read_pointer

#: An ingest that commits two files at a time; after its first commit it prints COMMITTED and
#: waits, holding the write lock, until the file named by its third argument exists.
SLOW_INGEST = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import retrieval.ingest as ing
    original = ing._commit
    go = Path(sys.argv[3])
    def commit(store, recipe, jobs, summary, warn):
        original(store, recipe, jobs, summary, warn)
        print("COMMITTED", len(jobs), flush=True)
        deadline = time.monotonic() + 120
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    ing._commit = commit
    ing.ingest(Path(sys.argv[1]), Path(sys.argv[2]), options=ing.IngestOptions(commit_every=2))
    print("FINISHED", flush=True)
""")


@pytest.fixture
def grown(tmp_path):
    """An index of 20 files, and its corpus grown to 30 files (not yet indexed)."""
    corpus = tmp_path / "corpus"
    synth.write_demo_corpus(corpus, per_class=6)
    later = tmp_path / "later"
    for path in sorted(corpus.rglob("*_0[45].wav")):  # 2 per class held back
        dest = later / path.relative_to(corpus)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, dest)
    ix = tmp_path / "ix"
    ingest(corpus, ix)
    shutil.copytree(later, corpus, dirs_exist_ok=True)
    return corpus, ix


def _reads(corpus, ix, out):
    """One round of reads through the CLI and the API; returns the file counts they saw."""
    runner = CliRunner()
    info = runner.invoke(cli, ["info", "--index", str(ix), "--json"])
    assert info.exit_code == 0, info.output
    info = json.loads(info.output)
    assert info["consistent"] and info["faiss_ntotal_file"] == info["file_vectors"]
    query = runner.invoke(cli, ["query", str(corpus / "vowel" / "vowel_01.wav"), "--index", str(ix), "--json"])
    assert query.exit_code == 0, query.output
    hits = json.loads(query.output)
    assert hits[0]["path"] == "vowel/vowel_01.wav" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    export = runner.invoke(cli, ["export", "--index", str(ix), str(out)])
    assert export.exit_code == 0, export.output
    exported = pq.read_table(out).column("path").to_pylist()
    with Index.open(ix) as idx:
        files = len(idx.files())
        assert idx.search(corpus / "tone" / "tone_02.wav", k=1).path[0] == "tone/tone_02.wav"
    return {info["files"], len(set(exported)), files}


def test_reads_during_an_ingest_see_the_last_published_state(grown, tmp_path):
    corpus, ix = grown
    server = Index.open(ix, snapshot_only=True)  # a long-running reader, opened before the ingest
    first = server.generation()
    assert first.startswith("snapshot") and len(server.files()) == 20
    go = tmp_path / "go"
    child = subprocess.Popen([sys.executable, "-c", SLOW_INGEST, str(corpus), str(ix), str(go)],
                             stdout=subprocess.PIPE, text=True)
    during = []
    try:
        assert child.stdout.readline().startswith("COMMITTED")  # the writer holds the lock from here on
        for i in range(3):
            seen = _reads(corpus, ix, tmp_path / f"during{i}.parquet")
            assert child.poll() is None, "the ingest finished before the reads: the test proves nothing"
            during.append(seen)
            assert not server.refresh() and server.generation() == first
        go.touch()
        for line in child.stdout:
            if line.startswith("FINISHED"):
                break
        assert child.wait(timeout=120) == 0
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            child.wait()
    assert during == [{20}] * 3  # the committed state before the ingest, whole, every time
    assert _reads(corpus, ix, tmp_path / "after.parquet") == {30}
    assert server.refresh() and server.generation() != first and len(server.files()) == 30
    assert server.search(corpus / "clicks" / "clicks_05.wav", k=1).path[0] == "clicks/clicks_05.wav"
    server.close()


def test_a_leased_snapshot_outlives_newer_ones_until_released(corpus, tmp_path):
    ix = tmp_path / "ix"
    ingest(corpus, ix)
    reader = Store.open(ix, snapshot_only=True)
    held = reader.snapshot_id
    synth.write_demo_corpus(tmp_path / "more", per_class=1)
    shutil.copytree(tmp_path / "more", corpus / "more")
    ingest(corpus, ix)
    assert reader.newer_snapshot() and (ix / SNAPSHOTS / str(held)).is_dir()  # still leased: kept
    assert reader.info()["files"] == 20  # and still whole
    reader.close()
    (corpus / "more" / "tone" / "tone_00.wav").unlink()
    ingest(corpus, ix)  # the next publish collects what no reader holds
    kept = sorted(p.name for p in (ix / SNAPSHOTS).iterdir())
    assert kept == sorted(["CURRENT", str(read_pointer(ix).id)])


def test_a_first_ingest_has_nothing_to_read_yet_and_says_who_writes(corpus, tmp_path):
    ix = tmp_path / "ix"
    ix.mkdir()
    child = subprocess.Popen([sys.executable, "-c", SLOW_INGEST, str(corpus), str(ix), str(tmp_path / "never")],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().startswith("COMMITTED")
        with pytest.raises(IndexLockedError, match=rf"process {child.pid} \(`.*python.*\).*no snapshot"):
            Store.open(ix)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def test_a_reader_in_the_writing_process_reads_the_snapshot(corpus, tmp_path):
    ix = tmp_path / "ix"
    ingest(corpus, ix)
    with Store.open(ix, writable=True) as writer:
        with writer.db.transaction():
            writer.db.set("note", "uncommitted to readers until published")
        with Store.open(ix) as reader:  # DuckDB refuses a second, read-only connection in this process
            assert reader.snapshot_id is not None and reader.db.get("note") is None
            assert reader.info()["reading"].startswith("snapshot")
    with Store.open(ix) as reader:  # the writer published when it closed; no writer now: the live file
        assert reader.snapshot_id is None and reader.db.get("note") is not None


def test_open_published_reads_the_snapshot_a_writer_just_published(tmp_path):
    corpus = tmp_path / "corpus"
    synth.write_demo_corpus(corpus, per_class=1)
    ix = tmp_path / "ix"
    ingest(corpus, ix)
    before = read_pointer(ix).id
    with Store.open(ix, writable=True) as store:  # a change, published on a clean exit
        with store.db.transaction():
            store.db.set("open_published_test", "yes")
    assert read_pointer(ix).id == before + 1
    reader = Store.open_published(ix)
    try:
        assert reader.snapshot_id == before + 1 and reader.db.get("open_published_test") == "yes"
        assert "just published" in reader.reading
    finally:
        reader.close()
    shutil.rmtree(ix / SNAPSHOTS)  # none published: the snapshot-only open publishes one first
    reader = Store.open_published(ix)
    try:
        assert reader.snapshot_id is not None and reader.db.get("open_published_test") == "yes"
    finally:
        reader.close()
