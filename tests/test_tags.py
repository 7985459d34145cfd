"""AudioSet tags from a (tiny, random) fine-tuned BEATs checkpoint, stored as metadata."""

import numpy as np
import pytest
from click.testing import CliRunner

from retrieval.cli import cli
from retrieval.encoders.base import EncoderOptions
from retrieval.encoders.beats import BeatsEncoder
from retrieval.index import Index
from retrieval.ingest import ingest

pytest_plugins = ["tests.encoders.conftest"]


def test_tags_are_the_max_over_windows_top_classes(tiny_beats_checkpoint, corpus, tmp_path):
    labels = {i: f"/m/{i:03d}" for i in range(527)}
    ckpt = tiny_beats_checkpoint(finetuned_model=True, label_dict=labels)
    ontology = tmp_path / "classes.csv"
    ontology.write_text("index,mid,display_name\n" + "".join(f"{i},/m/{i:03d},class {i}\n" for i in range(527)))
    ix = tmp_path / "ix"
    ingest(corpus, ix)
    out = CliRunner().invoke(cli, ["tag", "--index", str(ix), "--model", str(ckpt), "--top", "3",
                                   "--ontology", str(ontology)])
    assert out.exit_code == 0, out.output
    with Index.open(ix) as idx:
        files = idx.files().set_index("path")
        hits = idx.search(corpus / "tone" / "tone_00.wav", k=1, where="audioset_tags LIKE 'class %'")
    assert files.audioset_tags.notna().all() and hits.path[0] == "tone/tone_00.wav"
    # the stored tags equal the encoder's own top classes for a one-window file
    import soundfile as sf
    import soxr

    audio, sr = sf.read(corpus / "tone" / "tone_00.wav", dtype="float32")
    audio = soxr.resample(audio, sr, 16000).astype(np.float32)
    enc = BeatsEncoder(EncoderOptions(model=str(ckpt)))
    top = enc.top_classes(audio[None], np.array([len(audio)]), k=3)[0]
    assert files.loc["tone/tone_00.wav", "audioset_tags"] == ";".join(f"class {int(x[3:])}" for x, _ in top)
    assert files.loc["tone/tone_00.wav", "audioset_tags_score"] == pytest.approx(top[0][1], abs=1e-5)


def test_a_pretrained_checkpoint_cannot_tag(tiny_beats_checkpoint, corpus, tmp_path):
    ingest(corpus, tmp_path / "ix")
    out = CliRunner().invoke(cli, ["tag", "--index", str(tmp_path / "ix"), "--model", str(tiny_beats_checkpoint())])
    assert out.exit_code == 1 and "fine-tuned" in out.output
