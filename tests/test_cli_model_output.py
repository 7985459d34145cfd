"""Output options and progress bars of the commands that need a model: text, zeroshot (tiny CLAP), tag (tiny BEATs)."""

from __future__ import annotations

import csv
import io
import json

from click.testing import CliRunner

from retrieval import synth
from retrieval.cli import cli
from retrieval.configure import Choices
from retrieval.ingest import ingest
from tests.conftest import write
from tests.encoders._clap_models import build_tiny_clap

pytest_plugins = ["tests.encoders.conftest"]


def _run(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_text_and_zeroshot_print_rows_and_show_progress(tmp_path_factory):
    clap = build_tiny_clap(tmp_path_factory.mktemp("clap") / "tiny")
    root = tmp_path_factory.mktemp("zc") / "corpus"
    for label in ("tone", "noise"):
        for i in range(2):
            write(root / label / f"{label}{i}.wav", synth.demo_clip(label, i, 48000), 48000)
    ix = root.parent / "ix"
    ingest(root, ix, Choices(encoder="clap", model=str(clap)))

    hits = json.loads(_run("text", "rain", "--index", ix, "-k", "3", "--json").stdout)
    rows = list(csv.DictReader(io.StringIO(_run("text", "rain", "--index", ix, "-k", "3", "--csv").stdout)))
    assert [r["path"] for r in rows] == [h["path"] for h in hits] and float(rows[0]["score"]) == hits[0]["score"]

    base = ["zeroshot", "--index", ix, "--labels", "dog,rain"]
    quiet = _run(*base, "--json")
    shown = _run(*base, "--nl", "--progress")
    assert shown.exit_code == 0 and "class prompts" in shown.stderr and "class prompts" not in quiet.stderr
    nl = [json.loads(line) for line in shown.stdout.splitlines()]
    assert nl == json.loads(quiet.stdout)["predictions"] and {r["predicted"] for r in nl} <= {"dog", "rain"}


def test_tag_prints_json_and_shows_progress(tiny_beats_checkpoint, tmp_path):
    ckpt = tiny_beats_checkpoint(finetuned_model=True)
    corpus = tmp_path / "corpus"
    for i in range(3):
        write(corpus / f"tone{i}.wav", synth.demo_clip("tone", i, 16000), 16000)
    ix = tmp_path / "ix"
    ingest(corpus, ix)
    out = _run("tag", "--index", ix, "--model", ckpt, "--top", "2", "--json", "--progress")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == {"tagged": 3, "column": "audioset_tags", "score_column": "audioset_tags_score"}
    assert "tagging" in out.stderr
    quiet = _run("tag", "--index", ix, "--model", ckpt, "--top", "2")
    assert quiet.exit_code == 0 and "tagging" not in quiet.stderr and quiet.stdout.startswith("tagged 3 files")
