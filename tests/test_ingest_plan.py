"""Ingest planning and validation: nothing lost, nothing silent (issue 11, items 1-3, 6, 12, 16-19).

Each test states the behaviour a careful user expects: a run that would lose data stops
before changing anything, bad settings and labels fail before any work with one line,
and an index may hold several corpus roots without their paths colliding.
"""

import json
import os
import re
import shutil

import pytest
from click.testing import CliRunner

from retrieval import synth
from retrieval.cli import cli
from retrieval.configure import Choices
from retrieval.errors import InputError
from retrieval.index import Index
from retrieval.ingest import IngestOptions, ingest
from retrieval.store import Store
from tests.conftest import write


def _run(corpus, index, **opts):
    return ingest(corpus, index, Choices(), IngestOptions(commit_every=5, **opts))


def _state(index):
    """Everything a run could change: rows of files, errors and the manifest's roots."""
    with Store.open(index) as s:
        con = s.db.con
        files = con.execute("SELECT root, path, file_id FROM files ORDER BY root, path").fetchall()
        errors = con.execute("SELECT root, path, reason FROM errors ORDER BY root, path").fetchall()
        roots = s.db.roots()
        return files, errors, roots, s.db.get("generation")


def _small(root, n=3, seed=0):
    for i in range(n):
        write(root / f"s{i}.wav", synth.chirp(200 + 100 * i + seed, 3000, 0.7 + 0.1 * i, 16000), 16000)
    return root


# -- item 1: a different folder, several roots, the removal guard, --dry-run ------------------


def test_a_different_folder_is_refused_and_changes_nothing(corpus, tmp_path):
    ix = tmp_path / "ix"
    _run(corpus, ix)
    before = _state(ix)
    other = _small(tmp_path / "other")
    with pytest.raises(InputError, match=r"holds corpus .*corpus, not .*other; nothing was changed.*--replace"):
        _run(other, ix)
    assert _state(ix) == before
    res = CliRunner().invoke(cli, ["index", str(other), "--index", str(ix)])
    assert res.exit_code == 1 and res.output.startswith("Error: index ") and len(res.output.splitlines()) == 1
    assert _state(ix) == before


def test_two_roots_with_the_same_relative_path_do_not_collide(tmp_path):
    a, b = _small(tmp_path / "a"), _small(tmp_path / "b", seed=7)  # both hold s0.wav, s1.wav, s2.wav
    ix = tmp_path / "ix"
    _run([a], ix)
    s = _run([a, b], ix)  # naming the old root too adds the new one beside it
    assert (s.files_indexed, s.files_unchanged, s.files_removed, s.files_moved) == (3, 3, 0, 0)
    files, _, roots, _ = _state(ix)
    assert roots == [str(a.resolve()), str(b.resolve())]
    assert sorted((r, p) for r, p, _ in files) == sorted(
        [(str(a.resolve()), f"s{i}.wav") for i in range(3)] + [(str(b.resolve()), f"s{i}.wav") for i in range(3)])
    with Index.open(ix) as idx:  # results say which root a relative path belongs to
        hit = idx.search(b / "s1.wav", k=1)
        assert (hit.root[0], hit.path[0]) == (str(b.resolve()), "s1.wav")
        assert idx.info()["corpus_roots"] == roots
        assert idx.store.db.file_locations("path = 's0.wav'") == [(str(a.resolve()), "s0.wav"),
                                                                   (str(b.resolve()), "s0.wav")]
    exported = tmp_path / "out.parquet"
    assert CliRunner().invoke(cli, ["export", "--index", str(ix), str(exported)]).exit_code == 0
    import pandas as pd
    rows = pd.read_parquet(exported)
    assert sorted(set(zip(rows.root, rows.path))) == sorted((r, p) for r, p, _ in files)
    info = CliRunner().invoke(cli, ["info", "--index", str(ix)]).output
    assert f"{a.resolve()}; {b.resolve()}" in info
    # a run naming one root leaves the other alone
    os.remove(b / "s2.wav")
    s = _run([b], ix)
    assert (s.files_removed, s.files_unchanged) == (1, 2)
    assert len(_state(ix)[0]) == 5


def test_replace_swaps_the_root_and_keeps_moved_files(corpus, tmp_path):
    ix = tmp_path / "ix"
    _run(corpus, ix)
    moved = tmp_path / "moved"
    shutil.copytree(corpus, moved)
    shutil.rmtree(corpus)
    s = _run(moved, ix, replace=True)
    assert (s.files_moved, s.files_removed, s.files_indexed) == (20, 0, 0)
    files, _, roots, _ = _state(ix)
    assert roots == [str(moved.resolve())] and {r for r, _, _ in files} == {str(moved.resolve())}


def test_a_run_removing_more_than_a_fifth_stops_unless_allowed(corpus, tmp_path):
    ix = tmp_path / "ix"
    _run(corpus, ix)
    for p in list((corpus / "tone").iterdir()) + list((corpus / "noise").iterdir()):  # 8 of 20
        p.unlink()
    before = _state(ix)
    with pytest.raises(InputError, match=r"would remove 8 of the 20 indexed files \(40%.*--allow-removals"):
        _run(corpus, ix)
    assert _state(ix) == before
    assert _run(corpus, ix, allow_removals=True).files_removed == 8


def test_dry_run_prints_the_plan_and_changes_nothing(corpus, tmp_path):
    ix = tmp_path / "ix"
    _run(corpus, ix)
    write(corpus / "new" / "n.wav", synth.chirp(300, 3000, 1.3, 16000), 16000)
    write(corpus / "noise" / "noise_00.wav", synth.sine(2000, 1.0, 16000), 16000)
    os.rename(corpus / "tone" / "tone_00.wav", corpus / "tone" / "renamed.wav")
    os.remove(corpus / "clicks" / "clicks_03.wav")
    before = _state(ix)
    runner = CliRunner()
    res = runner.invoke(cli, ["index", str(corpus), "--index", str(ix), "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output)
    assert plan["new"] == ["new/n.wav"] and plan["changed"] == ["noise/noise_00.wav"]
    assert plan["moved"] == ["tone/tone_00.wav -> tone/renamed.wav"] and plan["removed"] == ["clicks/clicks_03.wav"]
    assert (plan["unchanged"], plan["indexed"], plan["refused"]) == (17, 20, None)
    res = runner.invoke(cli, ["index", str(corpus), "--index", str(ix), "--dry-run"])
    assert res.exit_code == 0 and "1 new, 1 changed, 1 moved, 0 copied, 1 removed, 0 failed, 17 unchanged" in res.output
    assert "removed: clicks/clicks_03.wav" in res.output
    assert _state(ix) == before
    with Store.open(ix):  # a dry run only reads: it runs beside a reader, without the write lock
        assert _run(corpus, ix, dry_run=True).plan["removed"] == ["clicks/clicks_03.wav"]
    fresh = tmp_path / "fresh"
    res = runner.invoke(cli, ["index", str(corpus), "--index", str(fresh), "--dry-run", "--json"])
    assert res.exit_code == 0 and len(json.loads(res.output)["new"]) == 20 and not fresh.exists()


# -- items 2, 3, 16: validate first, create nothing on failure, empty and vanished roots ---------


@pytest.mark.parametrize("args, message", [
    (["--window-s", "0"], "--window-s must be a positive number of seconds; got 0"),
    (["--window-s", "-1"], "--window-s must be a positive number of seconds; got -1"),
    (["--window-s", "nan"], "--window-s must be a positive number of seconds; got nan"),
    (["--hop-s", "inf"], "--hop-s must be a positive number of seconds; got inf"),
    (["--hop-s", "5"], r"the hop \(5 s\) must not exceed the window \(4 s\)"),
    (["--window-s", "1", "--hop-s", "2"], r"--hop-s \(2 s\) must not exceed --window-s \(1 s\)"),
    (["--silence-db", "nan"], "--silence-db must be a level in dBFS"),
    (["--batch-size", "0"], "--batch-size must be at least 1; got 0"),
    (["--commit-every", "0"], "--commit-every must be at least 1; got 0"),
    (["--encoder", "beats", "--model", "/no/such/BEATs.pt"], "does not exist"),
])
def test_bad_settings_fail_in_one_line_and_create_nothing(corpus, tmp_path, args, message):
    ix = tmp_path / "ix"
    res = CliRunner().invoke(cli, ["index", str(corpus), "--index", str(ix), *args])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert re.search(message, res.output), res.output
    assert not ix.exists()


def test_a_failed_first_run_removes_what_it_created_but_never_an_existing_index(corpus, tmp_path, monkeypatch):
    import retrieval.ingest as ingest_mod

    ix = tmp_path / "ix"
    ix.mkdir()
    (ix / "notes.txt").write_text("mine")
    monkeypatch.setattr(ingest_mod, "_embed_all", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        _run(corpus, ix)
    assert sorted(p.name for p in ix.iterdir()) == ["notes.txt"]  # the folder was there: only ours went
    monkeypatch.undo()
    _run(corpus, ix)
    before = _state(ix)
    write(corpus / "new" / "n.wav", synth.chirp(300, 3000, 1.3, 16000), 16000)
    monkeypatch.setattr(ingest_mod, "_embed_all", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        _run(corpus, ix)
    assert _state(ix)[0] == before[0]  # an existing index is never removed


def test_an_empty_corpus_is_an_error_not_a_deletion(corpus, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no audio files under"):
        _run(empty, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    ix = tmp_path / "ix"
    _run(corpus, ix)
    before = _state(ix)
    for sub in list(corpus.iterdir()):  # an unmounted share looks like this
        shutil.rmtree(sub)
    with pytest.raises(InputError, match=r"holds no audio files now, but index .* has 20 files from it"):
        _run(corpus, ix)
    assert _state(ix) == before
    assert _run(corpus, ix, allow_removals=True).files_removed == 20
    shutil.rmtree(corpus)
    with pytest.raises(InputError, match="does not exist"):
        _run(corpus, ix)
    other = _small(tmp_path / "other")  # an index left with no files may take another folder
    assert _run(other, ix).files_indexed == 3 and _state(ix)[2] == [str(other.resolve())]


# -- items 6, 12, 17: the labels CSV --------------------------------------------------------


def test_a_bad_labels_csv_fails_before_any_embedding_and_is_not_recorded(corpus, tmp_path, monkeypatch):
    import retrieval.ingest as ingest_mod

    bad = tmp_path / "bad.csv"
    bad.write_text("name,label\ntone/tone_00.wav,x\n")
    monkeypatch.setattr(ingest_mod, "_embed_all", lambda *a, **k: pytest.fail("embedded before the CSV check"))
    with pytest.raises(InputError, match=r"needs a 'file' or 'path' column; pass --labels-key name"):
        _run(corpus, tmp_path / "ix", labels_csv=bad)
    assert not (tmp_path / "ix").exists()
    both = tmp_path / "both.csv"
    both.write_text("file,path,label\ntone/tone_00.wav,x,y\n")
    with pytest.raises(InputError, match=r"both 'file' and 'path' columns; .*--labels-key file"):
        _run(corpus, tmp_path / "ix", labels_csv=both)
    with pytest.raises(InputError, match=r"'path' clash with built-in columns"):
        _run(corpus, tmp_path / "ix", labels_csv=both, labels_key="file")
    ix = tmp_path / "ix"
    monkeypatch.undo()
    _run(corpus, ix)
    with pytest.raises(InputError, match="needs a 'file' or 'path' column"):
        _run(corpus, ix, labels_csv=bad)
    warnings = []
    assert _run(corpus, ix, on_warning=warnings.append).files_unchanged == 20 and not warnings
    with Store.open(ix) as s:
        assert s.db.get("labels_csv") is None  # the bad CSV was not recorded for later runs


def test_labels_key_names_the_path_column_and_a_typo_lists_close_matches(corpus, tmp_path):
    csv = tmp_path / "esc.csv"
    csv.write_text("filename,fold,target,category\ntone/tone_00.wav,1,5,beep\nchirp/chirp_00.wav,2,,sweep\n")
    with pytest.raises(InputError, match=r"no column 'filenme' \(--labels-key\); did you mean 'filename'"):
        _run(corpus, tmp_path / "ix", labels_csv=csv, labels_key="filenme")
    ix = tmp_path / "ix"
    _run(corpus, ix, labels_csv=csv, labels_key="filename")
    with Index.open(ix) as idx:
        files = idx.files().set_index("path")
        types = idx.store.db.column_types()
    assert files.loc["tone/tone_00.wav", "category"] == "beep"
    assert types["fold"] == "BIGINT" and types["target"] == "BIGINT"  # an empty cell keeps the column integer
    # the key is recorded with the CSV, so a later run without --labels re-applies it
    csv.write_text("filename,fold,target,category\ntone/tone_00.wav,3,5,beep\n")
    _run(corpus, ix)
    with Index.open(ix) as idx:
        assert idx.files().set_index("path").loc["tone/tone_00.wav", "fold"] == 3


def test_integer_metadata_stays_integer_when_a_file_has_no_row(corpus, tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("file,take\ntone/tone_00.wav,164064\n")
    ix = tmp_path / "ix"
    _run(corpus, ix, labels_csv=csv)
    res = CliRunner().invoke(cli, ["query", str(corpus / "tone" / "tone_00.wav"), "--index", str(ix), "-k", "3",
                                   "--json"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.output)
    assert hits[0]["take"] == 164064 and isinstance(hits[0]["take"], int)
    assert [h["take"] for h in hits[1:]] == [None, None]
    table = CliRunner().invoke(cli, ["query", str(corpus / "tone" / "tone_00.wav"), "--index", str(ix), "-k", "1"])
    assert "164064" in table.output and "164064.0" not in table.output
    with Index.open(ix) as idx:
        files = idx.files().set_index("path")
    assert str(files["take"].dtype) == "Int64" and files.loc["tone/tone_00.wav", "take"] == 164064


def test_a_stored_labels_csv_that_vanished_or_broke_warns_instead_of_failing(corpus, tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("file,take\ntone/tone_00.wav,1\n")
    ix = tmp_path / "ix"
    _run(corpus, ix, labels_csv=csv)
    csv.write_text("nothing,useful\n1,2\n")
    warnings = []
    s = _run(corpus, ix, on_warning=warnings.append)
    assert s.files_unchanged == 20 and any("needs a 'file' or 'path' column" in w for w in warnings)
    csv.unlink()
    warnings.clear()
    _run(corpus, ix, on_warning=warnings.append)
    assert any("is gone" in w for w in warnings)


# -- item 19: error rows of deleted files ------------------------------------------------------


def test_error_rows_of_deleted_files_are_cleared(corpus, tmp_path):
    bad = corpus / "tone" / "broken.wav"
    bad.write_bytes(b"RIFF not really a wav file")
    ix = tmp_path / "ix"
    _run(corpus, ix)
    assert [p for _, p, _ in _state(ix)[1]] == ["tone/broken.wav"]
    bad.unlink()
    _run(corpus, ix)
    assert _state(ix)[1] == []


def test_naming_no_folder_updates_every_root_of_the_index(tmp_path):
    a, b = _small(tmp_path / "a"), _small(tmp_path / "b", seed=7)
    ix = tmp_path / "ix"
    _run([a, b], ix)
    os.remove(a / "s0.wav")
    write(b / "s9.wav", synth.sine(440, 0.9, 16000), 16000)
    s = _run([], ix)
    assert (s.files_removed, s.files_indexed, s.files_unchanged) == (1, 1, 5)
    res = CliRunner().invoke(cli, ["index"])
    assert res.exit_code == 2 and "--index X to update every folder" in res.output
    with pytest.raises(InputError, match="no corpus folder given and no index"):
        _run([], tmp_path / "none")
    shutil.rmtree(b)  # a root that vanished is an error, not 4 deletions
    with pytest.raises(InputError, match="does not exist"):
        _run([], ix)
    assert len(_state(ix)[0]) == 6


def test_the_python_api_builds_from_several_folders(tmp_path):
    a, b = _small(tmp_path / "a"), _small(tmp_path / "b", seed=7)
    with Index.build([a, b], tmp_path / "ix") as idx:
        assert idx.info()["corpus_roots"] == [str(a.resolve()), str(b.resolve())]
        assert idx.last_ingest.files_indexed == 6
    with Index.build(str(a), tmp_path / "ix") as idx:  # one path still works, and updates only that root
        assert (idx.last_ingest.files_unchanged, idx.last_ingest.files_removed) == (3, 0)
