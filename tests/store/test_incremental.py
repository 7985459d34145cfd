"""FAISS follows DuckDB in place after small changes, and by refit + rebuild past the threshold.

Every check compares against exact answers: the index holds exactly DuckDB's live ids, each
under the stored transform of its raw DuckDB vector, and flat search equals numpy brute
force over the union. Kills during an update are simulated at every file write.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap

import faiss
import numpy as np
import pytest
from click.testing import CliRunner

from retrieval import synth
from retrieval.cli import cli
from retrieval.configure import Choices, resolve
from retrieval.ingest import IngestOptions, ingest
from retrieval.store import FileRow, Store
from retrieval.store import store as smod
from retrieval.store import vectors as vmod
from retrieval.store.vectors import VectorIndex, sidecar
from tests.conftest import write

KINDS = ("flat", "hnsw", "ivfpq")
WINDOWS = 10  # per synthetic file
N_FILES = 150  # 1500 windows: 30 files are 20 % of them


@pytest.fixture(autouse=True)
def _small(monkeypatch):
    monkeypatch.setattr(vmod, "IVFPQ_MIN_VECTORS", 1_000)  # a small IVF-PQ keeps these tests quick
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def _rows(first: int, n: int, dim: int, hop: int, window: int, seed: int) -> list[FileRow]:
    """``n`` synthetic files of clustered window vectors, named from ``first`` on."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((20, dim)).astype(np.float32)
    rows = []
    for f in range(first, first + n):
        w = centres[f % 20] + 0.3 * rng.standard_normal((WINDOWS, dim)).astype(np.float32)
        starts = np.arange(WINDOWS, dtype=np.int64) * hop
        rows.append(FileRow(path=f"f{f:05d}.wav", size=1, mtime=0.0, content_hash=f"{f:032x}", duration_s=1.0,
                            sample_rate=16000, channels=1, format="wav", n_samples=int(starts[-1]) + 1, status="ok",
                            label=f"c{f % 20}", starts=starts, ends=starts + window,
                            rms_db=np.zeros(WINDOWS, np.float32), silent=np.zeros(WINDOWS, bool),
                            n_frames=np.ones(WINDOWS, np.int64), window_vectors=w, file_vector=w.mean(0)))
    return rows


def _store(root, kind: str) -> Store:
    """A log-mel store of ``N_FILES`` synthetic files, fitted and synced once (a full build)."""
    _, recipe = resolve(Choices(encoder="logmel", pooling="mean"), None)
    store = Store.create(root)
    with store.db.transaction():
        store.set_recipe(recipe)
        store.set_index_type(kind)
    _add(store, 0, N_FILES)
    assert store.sync_vectors().startswith("refitted post-processing and rebuilt")
    return store


def _add(store: Store, first: int, n: int, seed: int = 0) -> None:
    """What an ingest commit does: insert files, bump the generation."""
    r = store.require_recipe()
    with store.db.transaction():
        store.db.insert_files(_rows(first, n, r.dim, r.hop_samples, r.window_samples, seed + first), r.dim)
        store.db.bump_generation()


def _delete(store: Store, paths: list[str]) -> np.ndarray:
    """Delete files by path; returns the window ids (both levels) that went with them."""
    ids = store.db.con.execute(
        "SELECT window_id FROM windows JOIN files USING (file_id) WHERE path IN (SELECT unnest(?::VARCHAR[]))",
        [paths]).fetchall()
    fids = [f for (f,) in store.db.con.execute(
        "SELECT file_id FROM files WHERE path IN (SELECT unnest(?::VARCHAR[]))", [paths]).fetchall()]
    with store.db.transaction():
        store.db.delete_files(fids)
        store.db.bump_generation()
    return np.array([i for (i,) in ids], np.int64)


def _check_exact(store: Store, level: str = "window") -> None:
    """The index holds exactly DuckDB's ids, each as the stored transform of its raw vector."""
    ids, raw = store.db.vectors(level, store.require_recipe().dim)
    vi = store.vectors(level)
    np.testing.assert_array_equal(vi.ids(), ids)
    assert vi.index.ntotal == vi.ntotal + vi.describe().get("masked_ids", 0)  # no row twice inside FAISS
    want = store.postprocess.apply(raw)
    np.testing.assert_allclose(vi.vectors_of(ids), want, atol=2e-3 if vi.kind == "ivfpq" else 1e-6)
    if vi.kind == "flat":  # and search equals numpy brute force over the union
        q = want[::37]
        scores, got = vi.search(q, 10)
        ref = np.sort(q @ want.T, axis=1)[:, ::-1][:, :10]
        np.testing.assert_allclose(scores, ref, atol=1e-5)
        assert set(got.ravel()) <= set(ids.tolist())


def _count_builds(monkeypatch) -> list[str]:
    builds: list[str] = []
    original = VectorIndex.build.__func__

    def build(cls, ids, vectors, generation, kind="flat", **kw):
        builds.append(kind)
        return original(cls, ids, vectors, generation, kind, **kw)

    monkeypatch.setattr(VectorIndex, "build", classmethod(build))
    return builds


@pytest.mark.parametrize("kind", KINDS)
def test_adding_and_deleting_a_few_files_updates_in_place(kind, tmp_path, monkeypatch):
    with _store(tmp_path / "ix", kind) as store:
        assert store.vectors("window").kind == kind
        fit = store.fit_digest()
        old = store.vectors("window").ids()[-50:]  # windows of files that stay
        before = store.vectors("window").vectors_of(old)
        builds = _count_builds(monkeypatch)
        _add(store, N_FILES, 5)  # 50 windows: 3.3 % of the 1500 fitted on
        gone = _delete(store, ["f00003.wav", "f00077.wav"])
        did = store.sync_vectors()
        assert did.startswith("updated in place (window +50 -20, file +5 -2)"), did
        assert builds == [] and store.fit_digest() == fit  # no FAISS build, no refit
        vi = store.vectors("window")
        assert vi.stats["added_since_build"] == 50 and vi.stats["removed_since_build"] == 20
        np.testing.assert_array_equal(vi.vectors_of(old), before)  # old rows' vectors unchanged
        for level in ("window", "file"):
            _check_exact(store, level)
            q = store.postprocess.apply(store.db.vectors(level, store.require_recipe().dim)[1])
            _, got = store.vectors(level).search(q, 20)
            assert not set(got.ravel().tolist()) & set(gone.tolist())  # deleted ids never come back
        if kind == "hnsw":
            assert "20 removed since, not re-measured" in vi.describe()["recall_note"]
        info = store.info()
        assert info["postprocess_fit"]["fitted_on"] == N_FILES * WINDOWS
        assert (info["postprocess_fit"]["added_since"], info["postprocess_fit"]["removed_since"]) == (50, 20)
        assert info["consistent"] and info["repaired_on_open"] == []
    with Store.open(tmp_path / "ix") as again:  # the updated files are current on disk: no repair
        assert again.vectors("window").ntotal == N_FILES * WINDOWS + 30 and again.repaired == []
        assert again.vectors("window").kind == kind


def test_change_past_the_threshold_refits_and_rebuilds(tmp_path, monkeypatch):
    with _store(tmp_path / "ix", "hnsw") as store:
        fit, gen = store.fit_digest(), store.db.get("fitted_generation")
        _add(store, N_FILES, 10)  # 100 windows: 6.7 %, in place
        assert store.sync_vectors().startswith("updated in place")
        builds = _count_builds(monkeypatch)
        _add(store, N_FILES + 10, 6)  # 60 more: 160 of 1500 since the fit, 10.7 % > 10 %
        did = store.sync_vectors()
        assert did.startswith("refitted post-processing and rebuilt: 160 added, 0 removed"), did
        assert builds == ["hnsw", "hnsw"] and store.fit_digest() != fit
        assert store.db.get("fitted_generation") != gen and store.db.get("fitted_on") == str(1660)
        assert "added_since_build" not in store.vectors("window").stats
        _check_exact(store)
        assert store.info()["postprocess_fit"]["added_since"] == 0


def test_refit_flag_forces_a_refit_even_without_change(tmp_path, monkeypatch):
    with _store(tmp_path / "ix", "flat") as store:
        assert store.sync_vectors() == "unchanged"
        builds = _count_builds(monkeypatch)
        gen = store.db.get("generation")
        assert store.sync_vectors(refit=True) == "refitted post-processing and rebuilt: refit requested"
        assert builds == ["flat", "flat"] and store.db.get("generation") != gen  # old FAISS files are stale
        _check_exact(store)


def test_a_kind_change_or_missing_file_rebuilds(tmp_path, monkeypatch):
    with _store(tmp_path / "ix", "flat") as store:
        _add(store, N_FILES, 2)
        store.faiss_path("file").unlink()
        did = store.sync_vectors()
        assert "rebuilt: file FAISS file missing" in did and did.startswith("refitted")
        _check_exact(store, "file")
        store.set_index_type("hnsw")  # nothing changed since the fit: rebuilt as hnsw, not refitted
        fit = store.fit_digest()
        assert store.sync_vectors() == "rebuilt window, file"
        assert store.vectors("window").kind == "hnsw" and store.fit_digest() == fit
        monkeypatch.setattr(vmod, "AUTO_FLAT_MAX", 100)  # auto picks hnsw for both levels: nothing to do
        store.set_index_type("auto")
        assert store.sync_vectors() == "unchanged"
        _add(store, N_FILES + 2, 1)
        assert store.sync_vectors().startswith("updated in place")
        _add(store, N_FILES + 3, 1)
        monkeypatch.setattr(vmod, "AUTO_FLAT_MAX", 2_000)  # auto now picks flat for 1540 windows
        did = store.sync_vectors()
        assert "rebuilt: window index kind changes from hnsw to flat at 1540 vectors" in did, did
        assert store.vectors("window").kind == "flat" and store.vectors("file").kind == "flat"
        _check_exact(store)


@pytest.mark.parametrize("then", ["open", "sync"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_kill_at_any_write_of_an_update_is_repaired(kind, then, tmp_path, monkeypatch):
    """Stop the update before each file write in turn (what a kill leaves: each write is atomic).

    One file in, one out: the index keeps its size, so a new index file beside the old
    sidecar would pass the sidecar's size check. Then the next open (``then="open"``) or
    the next ingest's sync (``then="sync"``) must end exact.
    """
    with _store(tmp_path / "ix", kind):
        pass
    writes_per_update = {"flat": 4, "hnsw": 4, "ivfpq": 6}[kind]  # index + sidecar per level (+ ivfpq's 2 .npy)
    original = vmod._write_atomic
    for step in range(writes_per_update + 1):
        killed = tmp_path / f"killed{step}"
        shutil.copytree(tmp_path / "ix", killed)
        with Store.open(killed, writable=True) as store:
            _add(store, N_FILES, 1)
            _delete(store, ["f00010.wav"])
            calls = [0]

            def write(path, fn):
                if calls[0] == step:
                    raise KeyboardInterrupt("killed")
                calls[0] += 1
                original(path, fn)

            monkeypatch.setattr(vmod, "_write_atomic", write)
            try:
                assert store.sync_vectors().startswith("updated in place")
                assert step == writes_per_update  # no write was left to kill
            except KeyboardInterrupt:
                assert step < writes_per_update
            monkeypatch.setattr(vmod, "_write_atomic", original)
        with Store.open(killed, writable=then == "sync") as store:
            if then == "sync":  # the next ingest; else what a search sees, repaired on open if needed
                store.sync_vectors()
            _check_exact(store, "window")
            _check_exact(store, "file")


CHILD = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from retrieval.store import Store
    from retrieval.store import vectors as vmod
    original, calls = vmod._write_atomic, [0]
    def write(path, fn):
        if calls[0] == int(sys.argv[2]):
            os.kill(os.getpid(), 9)
        calls[0] += 1
        original(path, fn)
    vmod._write_atomic = write
    with Store.open(Path(sys.argv[1]), writable=True) as store:
        store.sync_vectors()
""")


def test_kill_9_between_the_faiss_file_and_its_sidecar(tmp_path):
    with _store(tmp_path / "ix", "hnsw") as store:
        _add(store, N_FILES, 3)
        _delete(store, ["f00010.wav"])
    child = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "ix"), "1"], capture_output=True, text=True)
    assert child.returncode == -9, child.stderr
    assert not sidecar(tmp_path / "ix" / "windows.faiss").exists()  # the new file is there, not yet certified
    with Store.open(tmp_path / "ix") as store:
        _check_exact(store)
        assert store.repaired == ["window"]


def test_ingest_and_cli_take_the_incremental_path(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(smod, "REFIT_CHANGE_SHARE", 0.5)  # the 20-file corpus: one file is several % of it
    ix = tmp_path / "ix"
    run = CliRunner().invoke
    out = run(cli, ["index", str(corpus), "--index", str(ix), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["vectors_update"] == "refitted post-processing and rebuilt: a new index"
    write(corpus / "new" / "n.wav", synth.chirp(300, 3000, 1.3, 16000), 16000)
    (corpus / "clicks" / "clicks_03.wav").unlink()
    summary = ingest(corpus, ix)
    assert summary.vectors_update.startswith("updated in place"), summary.vectors_update
    with Store.open(ix) as store:
        _check_exact(store, "window")
        _check_exact(store, "file")
    info = run(cli, ["info", "--index", str(ix)])
    assert info.exit_code == 0 and re.search(r"fitted on \d+ windows; [1-9]\d* added, [1-9]\d* removed since",
                                              info.stdout), info.stdout
    out = run(cli, ["index", str(corpus), "--index", str(ix), "--refit", "--json"])
    assert json.loads(out.stdout)["vectors_update"] == "refitted post-processing and rebuilt: refit requested"
    summary = ingest(corpus, ix, options=IngestOptions(refit=False))
    assert summary.vectors_update == "unchanged"
