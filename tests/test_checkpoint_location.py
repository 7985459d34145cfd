"""A local checkpoint is recorded absolute, recognised by digest, and re-pointed when it moves.

A tiny random wav2vec2 folder is the checkpoint (``save_pretrained``, loaded through the
same path as a real one). The index is built from a relative ``--model``, used from another
directory, then the checkpoint is moved: the error says so and gives the re-point command,
which keeps the recipe hash and every vector.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from click.testing import CliRunner  # noqa: E402

from retrieval.cli import cli  # noqa: E402
from retrieval.configure import Choices  # noqa: E402
from retrieval.encoders.weights import weights_digest  # noqa: E402
from retrieval.errors import RecipeMismatchError, WeightsNotFoundError  # noqa: E402
from retrieval.index import Index  # noqa: E402
from retrieval.ingest import ingest  # noqa: E402
from retrieval.recipe import Recipe  # noqa: E402
from retrieval.store.store import Store  # noqa: E402
from tests.conftest import write  # noqa: E402


def tiny_wav2vec2(folder: Path, seed: int = 0) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(seed)
    config = Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20,
                            conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    Wav2Vec2Model(config).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(folder)
    return folder


@pytest.fixture()
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """An index built from ``--model ckpt/tiny`` typed relative to ``work/``."""
    monkeypatch.delenv("RETRIEVE_WAV2VEC2_MODEL", raising=False)
    work = tmp_path / "work"
    tiny_wav2vec2(work / "ckpt" / "tiny")
    corpus = tmp_path / "corpus"
    rng = np.random.default_rng(7)
    for i, n in enumerate((8000, 11025, 16001)):
        write(corpus / f"c{i}.wav", (0.2 * rng.standard_normal(n)).astype(np.float32), 16000)
    monkeypatch.chdir(work)
    ingest(corpus, tmp_path / "ix", Choices(encoder="wav2vec2", model="ckpt/tiny", postprocess="none"))
    monkeypatch.chdir(tmp_path)
    return {"work": work, "ckpt": work / "ckpt" / "tiny", "corpus": corpus, "ix": tmp_path / "ix"}


def stored(ix: Path) -> tuple[Recipe, str | None, np.ndarray]:
    with Store.open(ix) as store:
        recipe = store.require_recipe()
        return recipe, store.db.get("recipe_hash"), store.db.vectors("window", recipe.dim)[1]


def test_a_relative_model_is_stored_absolute_and_works_from_anywhere(built: dict[str, Path]) -> None:
    recipe, _, _ = stored(built["ix"])
    assert recipe.encoder_options["model"] == str(built["ckpt"].resolve())
    assert recipe.encoder_params["checkpoint_sha256"] == weights_digest(built["ckpt"])
    with Index.open(built["ix"]) as idx:  # cwd is no longer work/
        hits = idx.search(built["corpus"] / "c1.wav", k=1)
    assert hits["path"].iloc[0] == "c1.wav"


def test_a_moved_checkpoint_is_named_and_re_pointed_without_re_embedding(built: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    before, hash_before, vectors_before = stored(built["ix"])
    old = str(built["ckpt"].resolve())
    new = tmp_path / "models" / "moved"
    new.parent.mkdir()
    shutil.move(built["ckpt"], new)

    with Index.open(built["ix"]) as idx, pytest.raises(WeightsNotFoundError) as err:
        idx.search(built["corpus"] / "c1.wav", k=1)
    message = str(err.value)
    assert f"no longer at {old} (moved or deleted)" in message
    assert f"retrieve index {built['corpus'].resolve()} --index {built['ix']} --model NEW_PATH" in message
    assert before.digest in message and "Hugging Face" not in message and "hub" not in message

    out = CliRunner().invoke(cli, ["index", str(built["corpus"]), "--index", str(built["ix"]),
                                   "--model", str(new), "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output[out.output.rindex('{"files_indexed"'):])  # after transformers' stderr bars
    assert f"warning: re-pointed the wav2vec2 checkpoint from {old} to {new.resolve()} (same weights" in out.output
    assert summary["files_indexed"] == 0 and summary["files_unchanged"] == 3
    after, hash_after, vectors_after = stored(built["ix"])
    assert after.hash() == before.hash() and hash_after == hash_before
    assert after.encoder_options["model"] == str(new.resolve())
    assert after.encoder_params["checkpoint"] == str(new.resolve())
    np.testing.assert_array_equal(vectors_after, vectors_before)
    with Index.open(built["ix"]) as idx:
        assert idx.search(built["corpus"] / "c2.wav", k=1)["path"].iloc[0] == "c2.wav"


def test_other_weights_are_refused_naming_both_digests(built: dict[str, Path], tmp_path: Path) -> None:
    other = tiny_wav2vec2(tmp_path / "other", seed=1)
    with pytest.raises(RecipeMismatchError) as err:
        ingest(built["corpus"], built["ix"], Choices(model=str(other)))
    message = str(err.value)
    assert weights_digest(other) in message and weights_digest(built["ckpt"]) in message
    assert str(other) in message and str(built["ckpt"].resolve()) in message
    assert stored(built["ix"])[0].encoder_options["model"] == str(built["ckpt"].resolve())  # untouched


def test_an_index_without_a_digest_still_works_and_says_why_it_cannot_be_re_pointed(
        built: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # an index made before digests were recorded, from --model typed relative to work/
    with Store.open(built["ix"], writable=True) as store:
        old = json.loads(store.db.get("recipe"))
        del old["encoder_params"]["checkpoint_sha256"]
        old["encoder_options"]["model"] = "ckpt/tiny"
        old["encoder_params"]["checkpoint"] = "ckpt/tiny"
        store.db.set("recipe", json.dumps(old))
    legacy_hash = Recipe(**old).hash()
    monkeypatch.chdir(built["work"])
    again = ingest(built["corpus"], built["ix"], Choices())  # an update from where it was built
    assert again.files_indexed == 0 and again.files_unchanged == 3
    assert stored(built["ix"])[0].hash() == legacy_hash

    moved = tmp_path / "moved"
    shutil.move(built["ckpt"], moved)
    with pytest.raises(RecipeMismatchError, match="made before checkpoint digests were recorded"):
        ingest(built["corpus"], built["ix"], Choices(model=str(moved)))


def test_location_is_not_in_the_hash_once_there_is_a_digest() -> None:
    def recipe(where: str, digest: str | None = "ab" * 32) -> Recipe:
        params = {"checkpoint": where, "revision": None, "layer": "last"}
        if digest:
            params["checkpoint_sha256"] = digest
        return Recipe(encoder="wav2vec2", encoder_options={"model": where, "layer": None, "extra": {}},
                      encoder_params=params, sample_rate=16000, window_samples=16000, hop_samples=8000,
                      pooling="mean", postprocess="none", precision="fp32", frame_dim=16, dim=16, silence_db=None)

    here, elsewhere = recipe("/models/tiny"), recipe("/elsewhere/tiny")
    assert elsewhere.hash() == here.hash() and not here.differences(elsewhere)
    assert here.relocated(elsewhere).encoder_options["model"] == "/elsewhere/tiny"
    assert here.relocated(elsewhere).hash() == here.hash() and here.relocated(here) is None
    assert recipe("/models/tiny", "cd" * 32).hash() != here.hash()
    # without a digest (an index made before digests), the location stays in the hash, as it was
    assert recipe("/models/tiny", None).hash() != recipe("/elsewhere/tiny", None).hash()
