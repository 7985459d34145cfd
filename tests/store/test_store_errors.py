"""DuckDB damage, full disks, locks and checkpoints give one-line errors that say how to recover (issue 11, item 7)."""

import os
import shutil
import subprocess
import sys
import textwrap

import duckdb
import pytest
from click.testing import CliRunner

from retrieval.cli import cli
from retrieval.errors import IndexLockedError, StoreError
from retrieval.ingest import ingest
from retrieval.store import Store
from retrieval.store.db import CHECKPOINT_EVERY_COMMITS, MetadataDB, describe_failure

#: Leaves a committed but not checkpointed write in the WAL, as a kill after a commit does.
LEAVE_WAL = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from retrieval.store import Store
    store = Store.open(Path(sys.argv[1]), writable=True)
    store.db.con.execute("BEGIN TRANSACTION")
    for i in range(200):
        store.db.con.execute("INSERT INTO errors (path, severity, stage, reason) VALUES (?, 'warning', 'test', 'x')",
                             [f"wal_{i}.wav"])
    store.db.con.execute("COMMIT")
    os._exit(0)
""")


@pytest.fixture
def indexed(corpus, tmp_path):
    ix = tmp_path / "ix"
    ingest(corpus, ix)
    return ix


def _flip(path, at, n=64):
    data = bytearray(path.read_bytes())
    for i in range(at, min(at + n, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_wal_says_move_it_aside_and_what_stays(indexed):
    subprocess.run([sys.executable, "-c", LEAVE_WAL, str(indexed)], check=True)
    wal = indexed / "meta.duckdb.wal"
    assert wal.stat().st_size > 0
    _flip(wal, wal.stat().st_size // 2)
    result = CliRunner().invoke(cli, ["info", "--index", str(indexed)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    line = result.output.strip()
    assert "\n" not in line and "write-ahead log" in line and f"mv {wal} {wal}.damaged" in line
    shutil.move(wal, f"{wal}.damaged")  # the advice works: everything checkpointed is still there
    result = CliRunner().invoke(cli, ["info", "--index", str(indexed), "--json"])
    assert result.exit_code == 0 and '"files": 20' in result.output


def test_a_damaged_database_file_names_the_file_and_the_recovery(indexed):
    _flip(indexed / "meta.duckdb", 0, 300)  # the header
    result = CliRunner().invoke(cli, ["info", "--index", str(indexed)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "is damaged" in result.output and "retrieve index" in result.output


def test_duckdb_errors_met_outside_the_store_render_as_one_line(tmp_path):
    con = duckdb.connect(str(tmp_path / "x.duckdb"))
    full = duckdb.TransactionException(
        f'TransactionContext Error: Failed to commit: Could not write file "{tmp_path}/x.duckdb.wal": '
        "No space left on device")
    assert "disk full" in describe_failure(full) and "resumes" in describe_failure(full)
    assert "disk full" in describe_failure(OSError(28, "No space left on device"))
    assert describe_failure(ValueError("not ours")) is None
    con.close()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root to mount a small tmpfs")
def test_a_full_disk_during_an_ingest_is_one_line(corpus, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        result = CliRunner().invoke(cli, ["index", str(corpus), "--index", str(mnt / "ix")])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert "disk full" in result.output and "free space" in result.output
    finally:
        subprocess.run(["umount", str(mnt)])


def test_long_ingests_checkpoint_so_the_database_file_holds_early_commits(tmp_path):
    db = MetadataDB(tmp_path / "m.duckdb")
    for i in range(CHECKPOINT_EVERY_COMMITS + 2):
        with db.transaction():
            db.con.execute("INSERT INTO errors (path, severity, stage, reason) VALUES (?, 'warning', 't', 'x')", [str(i)])
    shutil.copy(tmp_path / "m.duckdb", tmp_path / "copy.duckdb")  # the file alone, as if the WAL were lost
    db.close()
    con = duckdb.connect(str(tmp_path / "copy.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM errors").fetchall()[0][0] >= CHECKPOINT_EVERY_COMMITS
    con.close()


HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from retrieval.store import Store
    store = Store.open(Path(sys.argv[1]), writable=True)
    print("HOLDING", flush=True)
    time.sleep(60)
""")


def test_the_lock_error_names_the_process_that_holds_it(indexed):
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(indexed), "holder-token-42"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "HOLDING"
        with pytest.raises(IndexLockedError) as err:
            Store.open(indexed, writable=True)
        msg = str(err.value)
        assert f"process {child.pid}" in msg and "holder-token-42" in msg and "retrieve index` may" not in msg
        assert isinstance(err.value, StoreError)
    finally:
        child.kill()
        child.wait()
