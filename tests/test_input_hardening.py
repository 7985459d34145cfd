"""Audio input that once stopped, hung or silently shrank an index (issue 11, items 3, 4, 8).

Every ingest that could hang runs in a daemon thread with a deadline, so a regression
fails the test instead of blocking the suite.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from retrieval import synth
from retrieval.audio.discover import discover
from retrieval.audio.paths import real_path, to_os, to_stored
from retrieval.index import Index
from retrieval.ingest import content_hash, ingest
from tests.conftest import write

DEADLINE_S = 60.0


def within_deadline(fn: Callable[[], Any], seconds: float = DEADLINE_S) -> Any:
    """``fn()``, or a test failure when it has not returned after ``seconds``."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # re-raised in the test's thread
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        pytest.fail(f"did not finish within {seconds:g} s (hung)")
    if "error" in out:
        raise out["error"]
    return out["value"]


def tone(path: Path, seconds: float = 0.5, freq: float = 440.0) -> Path:
    return write(path, synth.sine(freq, seconds, 16000), 16000)


# -- item 3: a folder that cannot be listed is an error, not a deletion -------------------

@pytest.mark.parametrize("failure", [PermissionError(13, "Permission denied"),
                                     FileNotFoundError(2, "No such file or directory")],
                         ids=["unreadable", "vanished"])
def test_unlisted_folder_keeps_its_files_and_is_recorded(tmp_path, monkeypatch, failure):
    root = tmp_path / "c"
    tone(root / "open" / "a.wav")
    tone(root / "locked" / "b.wav", freq=550)
    tone(root / "locked" / "deeper" / "c.wav", freq=660)
    first = ingest(root, tmp_path / "ix")
    assert first.files_indexed == 3

    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:  # as a chmod 000 folder (or one deleted mid-walk) behaves
        if not isinstance(path, int) and Path(os.fsdecode(path)).name == "locked":  # rmtree passes fds
            raise type(failure)(failure.errno, failure.strerror, os.fsdecode(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    warnings: list[str] = []
    again = ingest(root, tmp_path / "ix", options=_opts(warnings))
    assert again.files_removed == 0 and again.files_failed == 1
    with Index.open(tmp_path / "ix") as idx:
        assert set(idx.files().path) == {"open/a.wav", "locked/b.wav", "locked/deeper/c.wav"}
        errors = idx.errors()
    (row,) = errors.itertuples()
    assert (row.path, row.severity, row.stage) == ("locked", "error", "discover")
    assert failure.strerror in row.reason and "kept" in row.reason
    assert any(w.startswith("skipped locked: cannot read folder") for w in warnings)

    monkeypatch.setattr(os, "scandir", real_scandir)  # readable again: the row goes, nothing re-embedded
    healed = ingest(root, tmp_path / "ix")
    assert healed.files_indexed == 0 and healed.files_removed == 0 and healed.files_failed == 0
    with Index.open(tmp_path / "ix") as idx:
        assert idx.errors().empty


def test_unlisted_corpus_root_removes_nothing(tmp_path, monkeypatch):
    root = tmp_path / "c"
    tone(root / "a.wav")
    ingest(root, tmp_path / "ix")
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        if not isinstance(path, int) and Path(os.fsdecode(path)) == root:  # rmtree passes fds
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    s = ingest(root, tmp_path / "ix")
    assert s.files_removed == 0 and s.files_failed == 1
    with Index.open(tmp_path / "ix") as idx:
        assert list(idx.files().path) == ["a.wav"]
        assert list(idx.errors().path) == ["."]


def _opts(warnings: list[str]):
    from retrieval.ingest import IngestOptions

    return IngestOptions(on_warning=warnings.append)


# -- item 4: special files and undecodable names ------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_and_device_are_skipped_with_a_row(tmp_path):
    root = tmp_path / "c"
    tone(root / "ok.wav")
    os.mkfifo(root / "y.wav")
    os.symlink("/dev/zero", root / "zero.wav")
    found = {f.rel_path: f for f in discover(root)}
    assert "FIFO" in found["y.wav"].error and "character device" in found["zero.wav"].error

    s = within_deadline(lambda: ingest(root, tmp_path / "ix"))
    assert s.files_indexed == 1 and s.files_failed == 2
    with Index.open(tmp_path / "ix") as idx:
        errors = idx.errors().set_index("path")
    assert set(errors.index) == {"y.wav", "zero.wav"}
    assert (errors.severity == "error").all() and errors.reason.str.contains("not a regular file").all()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_content_hash_refuses_a_fifo_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "f.wav")
    with pytest.raises(OSError, match="not a regular file"):
        within_deadline(lambda: content_hash(tmp_path / "f.wav"))


def test_stored_paths_round_trip_any_bytes():
    names = ["a/b.wav", "ü ñ/文件.wav", "d/b\udcffx.wav", "\udcfe\udcff/\"x\".wav", 'q/"a', "s/a\\xff\udcff.wav",
             '"/x.wav']
    for name in names:
        stored = to_stored(name)
        stored.encode("utf-8")  # valid UTF-8: DuckDB and Parquet take it
        assert to_os(stored) == name
    assert to_stored("a/b.wav") == "a/b.wav" and to_stored("ü ñ/文件.wav") == "ü ñ/文件.wav"
    assert len({to_stored(n) for n in names}) == len(names)


@pytest.mark.skipif(os.name != "posix", reason="names are bytes only on POSIX")
def test_non_utf8_name_is_indexed_searchable_and_exported(tmp_path):
    root = tmp_path / "c"
    tone(root / "ok.wav", freq=300)
    bad_dir = os.path.join(os.fsencode(root), b"caf\xe9")  # latin-1 folder name
    os.makedirs(bad_dir)
    bad = os.path.join(bad_dir, b"n\xff.wav")
    os.rename(write(tmp_path / "chirp.wav", synth.chirp(500, 3000, 0.7, 16000), 16000), bad)

    s = within_deadline(lambda: ingest(root, tmp_path / "ix"))
    assert s.files_indexed == 2 and s.files_failed == 0
    again = ingest(root, tmp_path / "ix")  # and later runs keep working
    assert again.files_unchanged == 2 and again.files_failed == 0
    with Index.open(tmp_path / "ix") as idx:
        hits = idx.search(Path(os.fsdecode(bad)), k=1)
        stored = hits.path[0]
        assert stored == '"caf\\xe9"/"n\\xff.wav"'
        assert os.fsencode(real_path(root, stored)) == bad  # results point to the real file
        assert os.path.samefile(real_path(root, stored), bad)
        assert idx.files().set_index("path").loc[stored, "label"] == '"caf\\xe9"'
        idx.export(tmp_path / "out.parquet")
    import pyarrow.parquet as pq

    exported = set(pq.read_table(tmp_path / "out.parquet").column("path").to_pylist())
    assert exported == {"ok.wav", stored}
    assert real_path(root, stored).is_file()


# -- item 8: truncated files, symlink loops and links out of the corpus -------------------

def _cut(src: Path, dst: Path, keep_bytes: int) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes()[:keep_bytes])
    return dst


@pytest.mark.parametrize("fmt", ["WAV", "AIFF"])
def test_truncated_file_is_recorded(tmp_path, fmt):
    root = tmp_path / "c"
    ext = ".wav" if fmt == "WAV" else ".aiff"
    whole = tone(tmp_path / f"whole{ext}", seconds=0.6)
    header = whole.stat().st_size - 0.6 * 16000 * 2  # bytes before the samples
    _cut(whole, root / f"eight{ext}", int(header) + 16)  # 8 of 9600 samples
    _cut(whole, root / f"half{ext}", int(header) + 9600)  # 4800 of 9600
    tone(root / f"ok{ext}", seconds=0.6)
    warnings: list[str] = []
    s = ingest(root, tmp_path / "ix", options=_opts(warnings))
    assert s.files_indexed == 2 and s.files_failed == 1
    with Index.open(tmp_path / "ix") as idx:
        files = idx.files().set_index("path")
        errors = idx.errors().set_index("path")
    assert set(files.index) == {f"half{ext}", f"ok{ext}"} and f"ok{ext}" not in errors.index
    eight, half = errors.loc[f"eight{ext}"], errors.loc[f"half{ext}"]
    assert eight.severity == "error" and "declares 9600 frames (0.600 s) but 8 decoded" in eight.reason
    assert half.severity == "warning" and "declares 9600 frames (0.600 s) but 4800 decoded" in half.reason
    assert files.loc[f"half{ext}", "n_samples"] == 4800
    assert any(w.startswith(f"half{ext}: truncated") for w in warnings)


def test_truncated_file_is_recorded_by_decoding_workers(tmp_path):
    root = tmp_path / "c"
    whole = tone(tmp_path / "whole.wav", seconds=0.6)
    _cut(whole, root / "half.wav", 44 + 9600)
    tone(root / "ok.wav")
    from retrieval.ingest import IngestOptions

    s = ingest(root, tmp_path / "ix", options=IngestOptions(workers=1))
    assert s.files_indexed == 2 and s.warnings == 1
    with Index.open(tmp_path / "ix") as idx:
        (row,) = idx.errors().itertuples()
    assert row.path == "half.wav" and row.severity == "warning" and "truncated" in row.reason


def test_symlink_loop_and_links_out_of_the_corpus_are_recorded(tmp_path):
    root = tmp_path / "c"
    tone(root / "d" / "a.wav")
    tone(tmp_path / "elsewhere" / "x.wav", freq=700)
    tone(tmp_path / "single.wav", freq=900)
    os.symlink(root / "d", root / "d" / "loop")
    os.symlink(tmp_path / "elsewhere", root / "linked")
    os.symlink(tmp_path / "single.wav", root / "single.wav")
    warnings: list[str] = []
    s = ingest(root, tmp_path / "ix", options=_opts(warnings))
    assert s.files_indexed == 3 and s.files_failed == 0 and s.warnings == 3
    with Index.open(tmp_path / "ix") as idx:
        assert set(idx.files().path) == {"d/a.wav", "linked/x.wav", "single.wav"}
        errors = idx.errors().set_index("path")
    assert (errors.severity == "warning").all() and (errors.stage == "discover").all()
    assert "symlink loop" in errors.loc["d/loop", "reason"] and "not followed" in errors.loc["d/loop", "reason"]
    assert "outside the corpus" in errors.loc["linked", "reason"] and "followed" in errors.loc["linked", "reason"]
    assert "outside the corpus" in errors.loc["single.wav", "reason"]
    again = ingest(root, tmp_path / "ix")  # recorded once, not piled up, and kept for files left unchanged
    assert again.files_unchanged == 3 and again.warnings == 3
    with Index.open(tmp_path / "ix") as idx:
        assert len(idx.errors()) == 3
    os.unlink(root / "d" / "loop")
    ingest(root, tmp_path / "ix")
    with Index.open(tmp_path / "ix") as idx:
        assert "d/loop" not in set(idx.errors().path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_classify_a_folder_skips_special_files_and_links_back(tmp_path):
    root = tmp_path / "c"
    tone(root / "a" / "x.wav", freq=300)
    tone(root / "b" / "y.wav", freq=900)
    ingest(root, tmp_path / "ix")
    clips = tmp_path / "clips"
    tone(clips / "q.wav", freq=310)
    os.mkfifo(clips / "fifo.wav")
    os.symlink(clips, clips / "again")
    with Index.open(tmp_path / "ix") as idx:
        out = within_deadline(lambda: idx.classify(clips, k=1))
    assert [Path(c).name for c in out["clip"]] == ["q.wav"] and out["error"].isna().all()
    assert out.predicted[0] == "a"


@pytest.mark.skipif(os.name != "posix", reason="names are bytes only on POSIX")
def test_non_utf8_corpus_root_and_classified_clip_names(tmp_path):
    plain = tmp_path / "plain"
    tone(plain / "a" / "x.wav", freq=300)
    os.rename(tone(tmp_path / "q.wav", freq=310), os.path.join(os.fsencode(plain / "a"), b"q\xff.wav"))
    root = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"r\xe9pertoire")))
    os.rename(plain, root)
    s = ingest(root, tmp_path / "ix")
    assert s.files_indexed == 2
    with Index.open(tmp_path / "ix") as idx:
        assert idx.info()["corpus_root"].endswith('/"r\\xe9pertoire"')
        assert Path(to_os(idx.info()["corpus_root"])) == root.resolve()
        out = idx.classify(root / "a", k=1)
    assert sorted(out["clip"].map(lambda c: c.rsplit("/", 1)[1])) == ['"q\\xff.wav"', "x.wav"]
    assert out["error"].isna().all() and (out["predicted"] == "a").all()
