import os

import numpy as np
import pytest

from retrieval.audio.discover import audio_clips, discover
from retrieval.errors import InputError
from tests.conftest import write


def test_recursive_sorted_and_unicode(tmp_path):
    for rel in ["b/ü ñ 文件.wav", "a/x.flac", "a/sub/y.WAV", "notes.txt", "a/._junk.wav"]:
        p = tmp_path / rel
        if rel.endswith(("wav", "flac", "WAV")):
            write(p, np.zeros(100, np.float32), 8000)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("x")
    found = [f.rel_path for f in discover(tmp_path)]
    assert found == ["a/x.flac", "a/sub/y.WAV", "b/ü ñ 文件.wav"]


def test_symlink_loop_is_walked_once(tmp_path):
    write(tmp_path / "d" / "a.wav", np.zeros(10, np.float32), 8000)
    os.symlink(tmp_path / "d", tmp_path / "d" / "loop")
    found = list(discover(tmp_path))
    assert [f.rel_path for f in found if not f.folder] == ["d/a.wav"]
    (loop,) = [f for f in found if f.folder]
    assert loop.rel_path == "d/loop" and "symlink loop" in loop.note and loop.error is None


def test_dangling_link_is_reported_not_dropped(tmp_path):
    os.symlink(tmp_path / "gone.wav", tmp_path / "link.wav")
    (f,) = list(discover(tmp_path))
    assert f.rel_path == "link.wav" and f.error and "stat" in f.error


def test_audio_clips_walks_a_folder_and_keeps_paths_as_given(tmp_path):
    write(tmp_path / "a" / "one.wav", np.zeros(800, np.float32), 8000)
    write(tmp_path / "a" / "sub" / "two.flac", np.zeros(800, np.float32), 8000)
    (tmp_path / "a" / "notes.txt").write_text("not audio")
    assert sorted(p.name for p in audio_clips(tmp_path / "a")) == ["one.wav", "two.flac"]
    assert audio_clips(str(tmp_path / "missing.wav")) == [str(tmp_path / "missing.wav")]  # fails when read
    assert audio_clips([tmp_path / "x.wav", "y.wav"]) == [tmp_path / "x.wav", "y.wav"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no audio files under"):
        audio_clips(tmp_path / "empty")


def test_links_to_files_outside_name_the_same_target_as_realpath(tmp_path):
    """The note of a linked file names ``os.path.realpath`` of the link, whatever the kind of link."""
    outside = tmp_path / "outside"
    (outside / "real").mkdir(parents=True)
    (outside / "real" / "x.wav").write_bytes(b"RIFF")
    (outside / "alias").symlink_to(outside / "real")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "relative.wav").symlink_to("../outside/real/x.wav")
    (corpus / "through_alias.wav").symlink_to(outside / "alias" / "x.wav")
    (corpus / "chain.wav").symlink_to(corpus / "relative.wav")
    found = {f.rel_path: f for f in discover(corpus)}
    assert set(found) == {"relative.wav", "through_alias.wav", "chain.wav"}
    for name, f in found.items():
        assert f.note == f"symlink to a file outside the corpus ({os.path.realpath(corpus / name)}); followed"
