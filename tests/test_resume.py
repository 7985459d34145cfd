"""kill -9 in the middle of an ingest loses at most one batch; a re-run resumes with no duplicates."""

import signal
import subprocess
import sys
import textwrap

from retrieval import synth
from retrieval.index import Index
from retrieval.ingest import ingest
from retrieval.store import Store

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import retrieval.ingest as ing
    original = ing._commit
    def commit(store, recipe, jobs, summary, warn):
        original(store, recipe, jobs, summary, warn)
        print("COMMITTED", len(jobs), flush=True)
        time.sleep(0.2)  # leave the parent time to kill us mid-run
    ing._commit = commit
    ing.ingest(Path(sys.argv[1]), Path(sys.argv[2]), options=ing.IngestOptions(commit_every=4))
    print("FINISHED", flush=True)
""")


def test_kill_9_then_rerun_resumes_without_duplicates(tmp_path):
    corpus = tmp_path / "corpus"
    synth.write_demo_corpus(corpus, per_class=6)  # 30 files
    ix = tmp_path / "ix"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(corpus), str(ix)], stdout=subprocess.PIPE, text=True)
    committed = 0
    for line in child.stdout:
        if line.startswith("COMMITTED"):
            committed += int(line.split()[1])
            if committed >= 8:
                child.send_signal(signal.SIGKILL)
                break
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL

    with Store.open(ix) as store:  # the FAISS files are stale or missing: repaired from DuckDB on open
        n_files = store.db.con.execute("SELECT count(*) FROM files").fetchall()[0][0]
        assert committed <= n_files < 30
        info = store.info()
        assert info["consistent"] and info["faiss_ntotal_file"] == n_files

    summary = ingest(corpus, ix)
    assert summary.files_indexed == 30 - n_files and summary.files_unchanged == n_files
    with Store.open(ix) as store:
        rows = store.db.con.execute(
            "SELECT count(*), count(DISTINCT path) FROM files").fetchall()[0]
        segs = store.db.con.execute("SELECT count(*), count(DISTINCT window_id) FROM windows").fetchall()[0]
        assert rows == (30, 30) and segs[0] == segs[1]
        assert store.info()["consistent"]
    with Index.open(ix) as idx:
        hits = idx.search(corpus / "vowel" / "vowel_05.wav", k=1)
        assert hits.path[0] == "vowel/vowel_05.wav"
