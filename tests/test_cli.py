"""The CLI: help for every command, JSON output, one-line errors with exit code 1."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from retrieval.cli import cli


def _commands(group=cli, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))


@pytest.mark.parametrize("command", list(_commands()))
def test_every_command_has_help(command):
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert len(cli.get_command(None, command[0]).help or "") > 20
    assert "Usage:" in result.output


def test_index_query_info_export(corpus, tmp_path):
    run = CliRunner().invoke
    out = run(cli, ["index", str(corpus), "--index", str(tmp_path / "ix"), "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"files_indexed", "files_unchanged", "files_removed", "files_failed", "windows", "seconds"} <= set(summary)
    assert summary["files_indexed"] == 20

    q = run(cli, ["query", str(corpus / "clicks" / "clicks_02.wav"), "--index", str(tmp_path / "ix"), "-k", "3",
                  "--json"])
    hits = json.loads(q.stdout)
    assert q.exit_code == 0 and hits[0]["path"] == "clicks/clicks_02.wav" and abs(hits[0]["score"] - 1) < 1e-4
    assert {"score", "path", "start_s", "end_s", "label"} <= set(hits[0])

    table = run(cli, ["query", str(corpus / "clicks" / "clicks_02.wav"), "--index", str(tmp_path / "ix"), "-k", "2",
                      "--windows", "--where", "label = clicks"])
    assert table.exit_code == 0 and "clicks/clicks_02.wav" in table.output.splitlines()[1]

    info = json.loads(run(cli, ["info", "--index", str(tmp_path / "ix"), "--json"]).stdout)
    assert info["consistent"] and info["faiss_ntotal"] == info["windows"] and info["recipe"]["encoder"] == "logmel"

    ex = run(cli, ["export", "--index", str(tmp_path / "ix"), str(tmp_path / "v.parquet")])
    assert ex.exit_code == 0 and (tmp_path / "v.parquet").is_file()


def test_bad_or_missing_query_is_one_line_and_exit_1(corpus, tmp_path):
    CliRunner().invoke(cli, ["index", str(corpus), "--index", str(tmp_path / "ix")])
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVE")
    for clip in (tmp_path / "missing.wav", tmp_path / "bad.wav"):
        proc = subprocess.run([sys.executable, "-m", "retrieval", "query", str(clip), "--index", str(tmp_path / "ix")],
                              capture_output=True, text=True)
        assert proc.returncode == 1
        assert "Traceback" not in proc.stderr and proc.stderr.startswith("Error: ")
        assert len(proc.stderr.strip().splitlines()) == 1


def test_recipe_mismatch_is_a_clear_error(corpus, tmp_path):
    run = CliRunner().invoke
    run(cli, ["index", str(corpus), "--index", str(tmp_path / "ix"), "--pooling", "mean"])
    out = run(cli, ["index", str(corpus), "--index", str(tmp_path / "ix"), "--pooling", "max"])
    assert out.exit_code == 1 and "pooling: 'mean' != 'max'" in out.output


def test_models_lists_every_encoder():
    out = CliRunner().invoke(cli, ["models", "--json"])
    rows = {r["encoder"]: r for r in json.loads(out.stdout)}
    assert {"logmel", "wav2vec2", "beats", "clap"} <= set(rows)
    assert rows["logmel"]["available"] and rows["clap"]["text"]


def test_cli_pooling_choices_are_the_library_modes():
    from retrieval.pooling import POOLING_MODES

    option = next(p for p in cli.commands["index"].params if p.name == "pooling")
    assert set(option.type.choices) == set(POOLING_MODES)
