"""Window labels in labels.sqlite: written without a writer of meta.duckdb, read live, durable once
committed, taken during an ingest without being lost, and an older index's labels (kept in
meta.duckdb) read and then moved over."""

from __future__ import annotations

import datetime as dt
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from click.testing import CliRunner

from retrieval.adapt import Adapter
from retrieval.cli import cli
from retrieval.errors import IndexLockedError
from retrieval.index import Index
from retrieval.ingest import ingest
from retrieval.store import Store
from retrieval.store import label_file
from retrieval.store.label_file import LABELS_NAME, LabelFile
from retrieval.store.snapshot import read_pointer
from tests.store.test_read_while_indexing import SLOW_INGEST, grown  # noqa: F401  (a fixture)


def _rows(*labels: tuple[str, int, int, str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"content_hash": h, "start_sample": a, "end_sample": b, "target": t, "label": lab,
                          "source": "test"} for h, a, b, t, lab in labels])


def test_a_missing_file_holds_no_labels_and_a_write_replaces_by_key(tmp_path):
    lf = LabelFile(tmp_path)
    found, imported = lf.rows()
    assert found.empty and not imported and not (tmp_path / LABELS_NAME).exists()  # reads create nothing
    assert lf.upsert(_rows(("h1", 0, 10, "a", "positive"), ("h1", 0, 10, "b", "negative"))) == 2
    first = lf.rows()[0].set_index("target")
    assert lf.upsert(_rows(("h1", 0, 10, "a", "negative"))) == 1
    again = lf.rows(["a"])[0]
    assert again["label"].tolist() == ["negative"] and len(lf.rows()[0]) == 2
    assert again["seq"].iloc[0] > first.loc["a", "seq"]  # a rewrite orders after every earlier label
    assert again["labelled_at_us"].iloc[0] >= first.loc["a", "labelled_at_us"]
    assert lf.delete(["a"]) == 1 and lf.rows()[0]["target"].tolist() == ["b"]


def test_a_committed_label_survives_a_killed_process_and_a_held_file_is_waited_for(tmp_path, monkeypatch):
    code = textwrap.dedent("""
        import os, sys
        import pandas as pd
        from pathlib import Path
        from retrieval.store.label_file import LabelFile
        LabelFile(Path(sys.argv[1])).upsert(pd.DataFrame([{"content_hash": "h", "start_sample": 0,
            "end_sample": 5, "target": "t", "label": "positive", "source": "killed"}]))
        os.kill(os.getpid(), 9)  # no clean exit after the commit
    """)
    child = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert LabelFile(tmp_path).rows()[0][["source", "label"]].values.tolist() == [["killed", "positive"]]

    monkeypatch.setattr(label_file, "BUSY_TIMEOUT_S", 0.2)
    other = sqlite3.connect(tmp_path / LABELS_NAME, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    other.execute("UPDATE window_labels SET label = 'negative'")
    try:
        with pytest.raises(IndexLockedError, match="held by another process"):
            LabelFile(tmp_path).upsert(_rows(("h2", 0, 5, "t", "positive")))
        assert LabelFile(tmp_path).rows()[0]["label"].tolist() == ["positive"]  # readers see the last commit
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert LabelFile(tmp_path).upsert(_rows(("h2", 0, 5, "t", "positive"))) == 1


def test_a_writer_killed_mid_transaction_leaves_the_last_commit(tmp_path):
    lf = LabelFile(tmp_path)
    lf.upsert(pd.DataFrame([{"content_hash": f"h{i}", "start_sample": 0, "end_sample": 5, "target": "t",
                             "label": "positive", "source": "before"} for i in range(2000)]))
    code = textwrap.dedent("""
        import os, sqlite3, sys
        con = sqlite3.connect(sys.argv[1], isolation_level=None)
        con.execute("PRAGMA cache_size = 1")  # spill changed pages into the file before the commit
        con.execute("BEGIN IMMEDIATE")
        con.execute("UPDATE window_labels SET label = 'negative', source = 'half'")
        os.kill(os.getpid(), 9)
    """)
    child = subprocess.run([sys.executable, "-c", code, str(tmp_path / LABELS_NAME)], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert (tmp_path / f"{LABELS_NAME}-journal").exists()  # a hot journal: the file holds half a write
    found = lf.rows()[0]
    assert len(found) == 2000 and set(found["label"]) == {"positive"} and set(found["source"]) == {"before"}
    assert lf.upsert(_rows(("h0", 0, 5, "t", "negative"))) == 1


def test_labels_are_taken_during_an_ingest_and_kept_by_it(grown, tmp_path):
    corpus, ix = grown  # 20 files indexed, 30 in the folder
    csv = tmp_path / "labels.csv"
    csv.write_text("path,start_s,end_s,target,label\ntone/tone_01.wav,,,tone,positive\n"
                   "noise/noise_00.wav,0,0.5,tone,negative\n")
    go = tmp_path / "go"
    child = subprocess.Popen([sys.executable, "-c", SLOW_INGEST, str(corpus), str(ix), str(go)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().startswith("COMMITTED")  # the ingest holds meta.duckdb from here
        before = read_pointer(ix).id
        out = CliRunner().invoke(cli, ["label", "--index", str(ix), "--csv", str(csv), "--json"])
        assert out.exit_code == 0, out.output
        assert child.poll() is None, "the ingest finished before the label: the test proves nothing"
        with Index.open(ix) as idx:  # reads the snapshot, and the labels live
            assert idx.store.snapshot_id == before
            assert sorted(idx.adapter().labels(["tone"])["label"]) == ["negative", "positive"]
        go.touch()
        assert child.wait(timeout=120) == 0
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            child.wait()
    with Index.open(ix) as idx:
        ad = idx.adapter()
        assert len(idx.files()) == 30 and len(ad.labels(["tone"])) == 2
        resolved = ad.labels_db.window_labels(["tone"])
        assert set(resolved["label"]) == {"positive", "negative"}


def _legacy_table(store: Store, rows: list[tuple[str, int, int, str, str, str, dt.datetime]]) -> None:
    """What an index written before labels.sqlite held: the labels in meta.duckdb."""
    con = store.db.con
    with store.db.transaction():
        con.execute("CREATE TABLE window_labels (content_hash VARCHAR, start_sample BIGINT, end_sample BIGINT, "
                    "target VARCHAR, label VARCHAR, source VARCHAR, "
                    "labelled_at TIMESTAMP DEFAULT current_timestamp)")
        con.executemany("INSERT INTO window_labels VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


def test_labels_an_older_index_kept_in_meta_duckdb_are_read_then_moved(corpus, tmp_path):
    ix = tmp_path / "ix"
    ingest(corpus, ix)
    with Index.open(ix) as idx:
        files = idx.adapter().labels_db.windows_of(["tone/tone_00.wav", "chirp/chirp_01.wav"]).set_index("path")
    tone, chirp = (files.loc[p, "content_hash"] for p in ("tone/tone_00.wav", "chirp/chirp_01.wav"))
    old = dt.datetime(2025, 3, 4, 5, 6, 7, 123456)
    whole = 2**62
    store = Store.open(ix, writable=True)
    _legacy_table(store, [(tone, 0, whole, "tone", "positive", "csv:old.csv", old),
                          (chirp, 0, whole, "tone", "negative", "csv:old.csv", old)])
    store.publish()  # a snapshot that holds the table too
    store.db.close()  # without the writer's close: nothing else runs, as with an older version's index
    snap = read_pointer(ix).id

    with Index.open(ix) as idx:  # a reader of the live file: reads the table, writes nothing
        ad = idx.adapter()
        got = ad.labels(["tone"]).set_index("path")
        assert got["label"].to_dict() == {"tone/tone_00.wav": "positive", "chirp/chirp_01.wav": "negative"}
        assert (got["labelled_at"] == pd.Timestamp(old)).all() and set(got["source"]) == {"csv:old.csv"}
        assert ad.labels_db.targets() == ["tone"]
        assert len(ad.labels_db.window_labels(["tone"])) > 0
        assert not (ix / LABELS_NAME).exists()
        ad.label("tone/tone_00.wav", "tone", "negative")  # relabelled since: the new label wins
        assert ad.labels(["tone"]).set_index("path")["label"].to_dict() == {
            "tone/tone_00.wav": "negative", "chirp/chirp_01.wav": "negative"}

    with Store.open(ix, writable=True) as store:  # a writer's open moves the table into labels.sqlite
        assert not store.db.con.execute("SELECT count(*) FROM information_schema.tables "
                                        "WHERE table_name = 'window_labels'").fetchall()[0][0]
    found, imported = LabelFile(ix).rows()
    assert imported and sorted(zip(found["content_hash"], found["label"])) == sorted(
        [(tone, "negative"), (chirp, "negative")])
    with Index.open(ix, writable=True) as idx:
        ad = idx.adapter()
        moved = ad.labels(["tone"]).set_index("path")
        assert moved.loc["chirp/chirp_01.wav", "labelled_at"] == pd.Timestamp(old)  # kept as it was
        assert ad.labels_db.remove_labels(["tone"]) == 2
    # the older snapshot still holds the table; once moved, it is ignored (no removed label comes back)
    assert read_pointer(ix).id == snap  # labels changed nothing a snapshot holds: none was published
    with Store.open_published(ix) as leased:
        assert leased.db.con.execute("SELECT count(*) FROM window_labels").fetchall()[0][0] == 2
        assert Adapter(leased).labels().empty and Adapter(leased).labels_db.targets() == []

    # a move killed after the copy committed but before the table was dropped: redone, nothing copied twice
    store = Store.open(ix, writable=True)
    _legacy_table(store, [(tone, 0, whole, "tone", "positive", "csv:old.csv", old)])
    store.db.close()
    with Index.open(ix, writable=True) as idx:
        assert idx.adapter().labels().empty
