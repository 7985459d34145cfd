"""CLI output formats (--table/--json/--csv/--nl), `retrieve errors`, help texts and progress bars."""

from __future__ import annotations

import csv
import io
import json

import click
import numpy as np
import pytest
from click.testing import CliRunner

from retrieval import synth
from retrieval.cli import cli
from tests.conftest import write

SR = 16000


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """``(corpus, index)``: the demo corpus (3 clips a class) plus one broken and one silent file, indexed."""
    root = tmp_path_factory.mktemp("out") / "corpus"
    synth.write_demo_corpus(root, per_class=3)
    (root / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    write(root / "quiet" / "hush.wav", np.zeros(SR, np.float32), SR)
    ix = root.parent / "ix"
    out = CliRunner().invoke(cli, ["index", str(root), "--index", str(ix), "--no-progress"])
    assert out.exit_code == 0, out.output
    return root, ix


def _run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


# -- 21: retrieve errors ----------------------------------------------------------------------


def test_errors_lists_failed_and_warned_files_with_reasons(indexed):
    _, ix = indexed
    out = _run("errors", "--index", ix, "--json")
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    by_path = {r["path"]: r for r in rows}
    assert set(rows[0]) == {"path", "severity", "stage", "reason", "when"}
    assert by_path["broken.wav"]["severity"] == "error" and "decode" in by_path["broken.wav"]["reason"]
    assert by_path["quiet/hush.wav"]["severity"] == "warning" and "silent" in by_path["quiet/hush.wav"]["reason"]
    assert all(r["when"][:2] == "20" for r in rows)

    only = json.loads(_run("errors", "--index", ix, "--json", "--severity", "warning").stdout)
    assert [r["path"] for r in only] == ["quiet/hush.wav"]
    table = _run("errors", "--index", ix)
    assert table.exit_code == 0 and table.output.split()[:5] == ["path", "severity", "stage", "reason", "when"]
    assert "broken.wav" in table.output and "quiet/hush.wav" in table.output
    assert "1 errors, 1 warnings (list them: retrieve errors)" in _run("info", "--index", ix).output
    bad = _run("errors", "--index", ix, "--severity", "fatal")
    assert bad.exit_code == 2 and "'error', 'warning'" in bad.output


# -- 22: one set of output options on every row command ----------------------------------------


ROW_COMMANDS = ["query", "text", "classify", "eval", "errors", "zeroshot", "locate", "compare"]


@pytest.mark.parametrize("name", ROW_COMMANDS)
def test_every_row_command_takes_the_same_output_options(name):
    opts = {o for p in cli.commands[name].params for o in p.opts}
    assert {"--table", "--json", "--csv", "--nl"} <= opts


def test_tag_takes_json():
    assert "--json" in {o for p in cli.commands["tag"].params for o in p.opts}


def test_query_in_every_format_rounds_only_the_table(indexed):
    root, ix = indexed
    clip = root / "tone" / "tone_01.wav"
    base = ["query", clip, "--index", ix, "-k", "3"]
    hits = json.loads(_run(*base, "--json").stdout)
    assert hits[0]["path"] == "tone/tone_01.wav" and len(hits) == 3

    nl = [json.loads(line) for line in _run(*base, "--nl").stdout.splitlines()]
    assert nl == hits

    rows = list(csv.DictReader(io.StringIO(_run(*base, "--csv").stdout)))
    assert [r["path"] for r in rows] == [h["path"] for h in hits]
    assert [float(r["score"]) for r in rows] == [h["score"] for h in hits]  # exact, not rounded
    assert list(rows[0])[:5] == ["rank", "score", "path", "start_s", "end_s"]

    table = _run(*base).output.splitlines()
    assert table[0].split()[:4] == ["rank", "score", "path", "time"]
    assert table[2].split()[1] == f"{hits[1]['score']:.4f}"


def test_eval_and_classify_print_rows_as_csv_and_nl(indexed):
    root, ix = indexed
    metrics = json.loads(_run("eval", "--index", ix, "--label-column", "label", "--json").stdout)
    assert "knn_accuracy@1" in metrics  # the JSON shape stays an object
    rows = list(csv.DictReader(io.StringIO(_run("eval", "--index", ix, "--label-column", "label", "--csv").stdout)))
    assert {r["metric"]: r["value"] for r in rows}["knn_accuracy@1"] == str(metrics["knn_accuracy@1"])

    one = [json.loads(x) for x in _run("classify", root / "tone" / "tone_00.wav", "--index", ix, "-k", "3",
                                       "--nl").stdout.splitlines()]
    assert len(one) == 1 and one[0]["predicted"] == "tone" and isinstance(one[0]["votes"], dict)
    assert one == json.loads(_run("classify", root / "tone" / "tone_00.wav", "--index", ix, "-k", "3",
                                  "--json").stdout)


# -- 25: help texts and defaults ------------------------------------------------------------------


def _options():
    for name, cmd in cli.commands.items():
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden and p.name != "help":
                yield name, p


@pytest.mark.parametrize("name,option", [pytest.param(n, p, id=f"{n}{p.opts[0]}") for n, p in _options()])
def test_every_option_has_help_and_states_its_default(name, option):
    assert option.help and len(option.help) > 10, f"retrieve {name} {option.opts[0]} has no help text"
    if option.is_flag or option.multiple or option.required:
        return
    if option.default not in (None, getattr(click.core, "UNSET", None)):
        assert option.show_default or "default" in option.help.lower() or "[" in option.help, (
            f"retrieve {name} {option.opts[0]}: default {option.default!r} is not shown")
    elif isinstance(option.type, click.Choice):  # omitted, it still means one of the choices: say which
        assert "default" in option.help.lower() or "[" in option.help, (
            f"retrieve {name} {option.opts[0]}: the help does not say what omitting it means")


def test_postprocess_help_names_whiten():
    from retrieval.configure import DEFAULT_POSTPROCESS

    help_text = next(p.help for p in cli.commands["index"].params if p.name == "postprocess")
    assert DEFAULT_POSTPROCESS in help_text


# -- 23: progress bars ----------------------------------------------------------------------------


def test_long_commands_show_progress_on_request_and_not_otherwise(indexed):
    root, ix = indexed
    runs = {
        "classifying": ["classify", root / "noise", "--index", ix, "--out", root.parent / "p.csv"],
        "linear probe": ["eval", "--index", ix, "--label-column", "label", "--probe"],
        "scanning": ["locate", root / "tone" / "tone_00.wav", root / "chirp" / "chirp_00.wav"],
    }
    for bar, args in runs.items():
        shown = _run(*args, "--progress")
        assert shown.exit_code == 0, shown.output
        assert bar in shown.stderr, (bar, shown.stderr)
        quiet = _run(*args)  # not a terminal: no bar
        assert quiet.exit_code == 0 and bar not in quiet.stderr
        assert bar not in _run(*args, "--no-progress").stderr


def test_compare_prints_rows_per_index_and_keeps_its_json(indexed):
    root, ix = indexed
    other = root.parent / "ix_center"
    assert _run("index", root, "--index", other, "--postprocess", "center").exit_code == 0
    base = ["compare", "--index", ix, "--index", other, "--label-column", "label", "--resamples", "100"]
    doc = json.loads(_run(*base, "--json").stdout)
    assert {"table", "winner", "margin", "ci", "p_value"} <= set(doc)
    rows = list(csv.DictReader(io.StringIO(_run(*base, "--csv").stdout)))
    assert len(rows) == 2 and {r["index"] for r in rows} == set(doc["table"])
    for r in rows:
        assert float(r["knn_accuracy@1"]) == doc["table"][r["index"]]["knn_accuracy@1"]
    table = _run(*base)
    assert table.exit_code == 0 and table.output.splitlines()[0].split()[:2] == ["index", "knn_accuracy@1"]
