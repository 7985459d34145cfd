"""A BEATs index records where its checkpoint was, so it opens from anywhere, and follows a move.

BEATs always recorded the checkpoint's sha256; an index built from ``RETRIEVE_BEATS_MODEL``
(or the default file name) relative to one directory must still load from another, and a
renamed or moved file with the same bytes is re-pointed without changing the recipe hash.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from retrieval.configure import Choices
from retrieval.errors import WeightsNotFoundError
from retrieval.index import Index
from retrieval.ingest import ingest
from retrieval.store.store import Store
from tests.conftest import write


def test_env_var_checkpoint_opens_from_anywhere_and_follows_a_rename(
        tiny_beats_checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = tiny_beats_checkpoint()
    corpus = tmp_path / "corpus"
    rng = np.random.default_rng(11)
    for i, n in enumerate((9000, 16000)):
        write(corpus / f"b{i}.wav", (0.2 * rng.standard_normal(n)).astype(np.float32), 16000)
    monkeypatch.chdir(checkpoint.parent)
    monkeypatch.setenv("RETRIEVE_BEATS_MODEL", checkpoint.name)  # relative to the build directory
    ingest(corpus, tmp_path / "ix", Choices(encoder="beats", postprocess="none"))
    monkeypatch.delenv("RETRIEVE_BEATS_MODEL")
    monkeypatch.chdir(tmp_path)
    with Index.open(tmp_path / "ix") as idx:
        assert idx.search(corpus / "b1.wav", k=1)["path"].iloc[0] == "b1.wav"
        hash_before = idx.recipe.hash()

    renamed = tmp_path / "weights" / "beats-renamed.pt"
    renamed.parent.mkdir()
    shutil.copy(checkpoint, renamed)
    checkpoint.unlink()
    with Index.open(tmp_path / "ix") as idx:
        with pytest.raises(WeightsNotFoundError, match="no longer at .* --model NEW_PATH"):
            idx.search(corpus / "b1.wav", k=1)
    summary = ingest(corpus, tmp_path / "ix", Choices(model=str(renamed)))
    assert summary.files_indexed == 0 and summary.files_unchanged == 2
    with Store.open(tmp_path / "ix") as store:
        recipe = store.require_recipe()
    assert recipe.hash() == hash_before and recipe.encoder_params["checkpoint"] == str(renamed)
    with Index.open(tmp_path / "ix") as idx:
        assert idx.search(corpus / "b0.wav", k=1)["path"].iloc[0] == "b0.wav"
