"""``retrieve train --finetune last:N`` on a tiny random wav2vec2 index (2 transformer blocks).

The labelled windows are decoded again from the corpus, the last block and a head are
trained, and the checkpoint is written as a ``save_pretrained`` folder. Checked: it loads
through the normal encoder path, only block 2 differs from the base weights (block 1 and
everything else bit-identical), the validation loss and the early-stopping rule are recorded
as run, the same seed gives the same weights, the printed command builds an index from it,
and logmel, a block count above the model's, bad ``last:N`` forms, an unknown group column and
labels from a single file are refused with one line each.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from click.testing import CliRunner  # noqa: E402

from retrieval import encoders, synth  # noqa: E402
from retrieval.cli import cli  # noqa: E402
from retrieval.encoders.base import EncoderOptions  # noqa: E402
from retrieval.encoders.weights import weights_digest  # noqa: E402
from retrieval.errors import InputError  # noqa: E402
from retrieval.finetune import SUMMARY_FILE, parse_finetune, split_groups  # noqa: E402
from retrieval.index import Index  # noqa: E402

EPOCHS = 2


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, one_thread) -> dict[str, Path]:
    """A tiny 2-block wav2vec2 checkpoint, a 10-file corpus indexed with it (0.5 s windows), and
    labels for target ``a``: the files of the first class positive, the others negative."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    root = tmp_path_factory.mktemp("finetune")
    ckpt = root / "w2v"
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="group",
    )).eval().save_pretrained(ckpt)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=False).save_pretrained(ckpt)
    corpus = root / "corpus"
    synth.write_demo_corpus(corpus, per_class=2)
    ix = root / "ix"
    Index.build(corpus, ix, encoder="wav2vec2", model=str(ckpt), postprocess="none", window_s=0.5,
                hop_s=0.5).close()
    with Index.open(ix, writable=True) as idx:
        paths = sorted(idx.files()["path"].tolist())
        first = paths[0].split("/")[0]
        idx.adapter().add_labels(pd.DataFrame(
            [{"path": p, "target": "a", "label": "positive" if p.startswith(first + "/") else "negative"}
             for p in paths]))
    return {"root": root, "ckpt": ckpt, "corpus": corpus, "ix": ix}


def _train(ix: Path, *args: str) -> tuple[int, str]:
    """Exit code and stdout of ``retrieve train``; on failure, the ``Error:`` line (transformers may
    draw a loading bar on stderr)."""
    res = CliRunner().invoke(cli, ["train", "--index", str(ix), "--target", "a", *args])
    if res.exit_code == 0:
        return 0, res.stdout
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    return res.exit_code, "\n".join(errors) or res.output


@pytest.fixture(scope="module")
def tuned(built: dict[str, Path]) -> dict:
    code, out = _train(built["ix"], "--finetune", "last:1", "--epochs", str(EPOCHS), "--json")
    assert code == 0, out
    return json.loads(out)


def test_the_checkpoint_loads_and_only_the_last_block_changed(built, tuned):
    assert tuned["blocks"] == 1 and tuned["blocks_total"] == 2
    base = encoders.build("wav2vec2", EncoderOptions(model=str(built["ckpt"]))).model.state_dict()
    adapted = encoders.build("wav2vec2", EncoderOptions(model=tuned["model"])).model.state_dict()
    assert set(base) == set(adapted)
    changed = sorted(k for k in base if not torch.equal(base[k], adapted[k]))
    assert changed and all(k.startswith("encoder.layers.1.") for k in changed)
    assert set(changed) <= set(tuned["trained_tensors"])
    assert all(k.startswith("encoder.layers.1.") for k in tuned["trained_tensors"])
    head = np.load(Path(tuned["model"]) / "finetune_head.npz")
    assert head["weight"].shape == (1, 32) and list(head["targets"]) == ["a"]


def test_the_summary_records_the_losses_labels_and_split(built, tuned):
    on_disk = json.loads((Path(tuned["model"]) / SUMMARY_FILE).read_text())
    assert on_disk == tuned
    val = [h["val_loss"] for h in tuned["history"]]
    assert 1 <= tuned["epochs"] == len(val) <= EPOCHS
    assert all(math.isfinite(v) for v in val) and math.isfinite(tuned["val_loss_before"])
    assert tuned["best_val_loss"] == min(val) and val[tuned["best_epoch"] - 1] == min(val)
    with Index.open(built["ix"]) as idx:
        labelled = len(idx.adapter().labels_db.window_labels(["a"]))
        n_files = len(idx.files())
    counts = tuned["labels"]["a"]
    assert sum(counts[part][side] for part in ("train", "val") for side in ("positive", "negative")) == labelled
    assert tuned["windows"]["train"] + tuned["windows"]["val"] == labelled and tuned["windows"]["val"] > 0
    assert tuned["groups"]["column"] == "file" and tuned["groups"]["train"] + tuned["groups"]["val"] == n_files
    assert tuned["base_checkpoint"] == str(built["ckpt"].resolve())
    assert tuned["recipe"]["lr"] == 1e-5 and tuned["recipe"]["optimizer"] == "AdamW"
    assert Path(tuned["model"]).parent == built["ix"] / "finetuned"


def test_early_stopping_follows_its_rule(built):
    with Index.open(built["ix"]) as idx:
        s = idx.finetune("a", 1, epochs=6, patience=1, lr=1e-3, head_lr=1e-1, out=built["root"] / "stop")
    val = [h["val_loss"] for h in s["history"]]
    best = int(np.argmin(val))
    assert s["best_epoch"] == best + 1
    # stopped early only when the epoch after the best was no better; else ran every epoch
    assert len(val) == 6 or len(val) == best + 2


def test_the_same_seed_gives_the_same_weights(built, tuned):
    with Index.open(built["ix"]) as idx:
        again = idx.finetune("a", 1, epochs=EPOCHS, out=built["root"] / "again")
    a = encoders.build("wav2vec2", EncoderOptions(model=tuned["model"])).model.state_dict()
    b = encoders.build("wav2vec2", EncoderOptions(model=again["model"])).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again["history"] == tuned["history"]


def test_the_printed_command_builds_an_index_from_the_checkpoint(built, tuned, tmp_path):
    args = shlex.split(tuned["command"])
    assert args[:2] == ["retrieve", "index"] and args[args.index("--model") + 1] == tuned["model"]
    args[args.index("--index") + 1] = str(tmp_path / "new")
    res = CliRunner().invoke(cli, args[1:] + ["--no-progress"])
    assert res.exit_code == 0, res.output
    with Index.open(tmp_path / "new") as idx, Index.open(built["ix"]) as old:
        assert idx.recipe.encoder_params["checkpoint_sha256"] == weights_digest(tuned["model"])
        assert idx.recipe.window_samples == old.recipe.window_samples
        assert idx.recipe.pooling == old.recipe.pooling and len(idx.files()) == len(old.files())


def test_table_output_prints_the_command(built):
    code, out = _train(built["ix"], "--finetune", "last:1", "--epochs", "1", "--out", str(built["root"] / "tbl"))
    assert code == 0, out
    assert "build an index with it:" in out and f"--model {built['root'] / 'tbl'}" in out


def test_more_blocks_than_the_model_has_are_refused(built):
    code, out = _train(built["ix"], "--finetune", "last:3")
    assert code != 0 and "choose last:1 .. last:2" in out
    with Index.open(built["ix"]) as idx, pytest.raises(InputError, match="2 transformer block") as err:
        idx.finetune("a", 3)
    assert "\n" not in str(err.value)


def test_options_of_the_other_mode_are_refused(built):
    res = CliRunner().invoke(cli, ["train", "--index", str(built["ix"]), "--target", "a", "--finetune", "last:1",
                                   "--head", "mlp"])
    assert res.exit_code == 2 and "--head do not apply with --finetune" in res.output
    res = CliRunner().invoke(cli, ["train", "--index", str(built["ix"]), "--target", "a", "--epochs", "3"])
    assert res.exit_code == 2 and "--epochs only apply with --finetune" in res.output


@pytest.mark.parametrize("bad", ["first:1", "last:0", "last:", "last:x", "2"])
def test_bad_forms_are_refused(bad):
    with pytest.raises(InputError, match="last:N"):
        parse_finetune(bad)
    assert parse_finetune(" last:4 ") == 4


def test_an_unknown_group_column_is_refused(built):
    code, out = _train(built["ix"], "--finetune", "last:1", "--group-column", "speakr")
    assert code != 0 and "speakr" in out and "label" in out


def test_a_group_column_holds_whole_groups_out(built):
    with Index.open(built["ix"]) as idx:
        s = idx.finetune("a", 1, epochs=1, group_column="label", out=built["root"] / "grouped")
    assert s["groups"]["column"] == "label" and s["groups"]["train"] + s["groups"]["val"] == 5


def test_several_targets_share_the_blocks_with_one_logit_each(built):
    with Index.open(built["ix"], writable=True) as idx:
        paths = sorted(idx.files()["path"].tolist())
        idx.adapter().add_labels(pd.DataFrame({"path": paths[2:6], "target": "b",
                                               "label": ["positive", "positive", "negative", "negative"]}))
        b_labels = len(idx.adapter().labels_db.window_labels(["b"]))
        s = idx.finetune(["a", "b"], 1, epochs=1, out=built["root"] / "two")
    head = np.load(Path(s["model"]) / "finetune_head.npz")
    assert head["weight"].shape == (2, 32) and list(head["targets"]) == ["a", "b"]
    assert sum(v for part in s["labels"]["b"].values() for v in part.values()) == b_labels


def test_logmel_is_refused_in_one_line(tmp_path):
    corpus = tmp_path / "corpus"
    synth.write_demo_corpus(corpus, per_class=1)
    Index.build(corpus, tmp_path / "ix").close()
    with Index.open(tmp_path / "ix", writable=True) as idx:
        paths = sorted(idx.files()["path"].tolist())
        idx.adapter().add_labels(pd.DataFrame({"path": paths[:2], "target": "a", "label": ["positive", "negative"]}))
    code, out = _train(tmp_path / "ix", "--finetune", "last:1")
    assert code != 0 and "logmel" in out and len(out.splitlines()) == 1


def test_split_holds_out_whole_groups_deterministically():
    rng = np.random.default_rng(0)
    groups = np.array([f"g{i // 3}" for i in range(30)], dtype=object)
    y = (rng.random((30, 1)) < 0.4).astype(np.float32)
    train, val = split_groups(y, groups, folds=5, seed=1)
    assert len(val) and len(train) and set(groups[train]).isdisjoint(groups[val])
    assert sorted(np.r_[train, val].tolist()) == list(range(30))
    again = split_groups(y, groups, folds=5, seed=1)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    with pytest.raises(InputError, match="at least 2"):
        split_groups(y, np.array(["one"] * 30, dtype=object), folds=5, seed=1)
