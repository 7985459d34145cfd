"""Hostile input to the query-side CLI gives one-line errors (or warnings), never a traceback."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from retrieval import synth
from retrieval.cli import cli
from retrieval.errors import InputError
from retrieval.filters import compile_where
from tests.conftest import write

SR = 16000


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """``(corpus, index)``: two classes with an integer ``take`` column from a labels CSV."""
    root = tmp_path_factory.mktemp("err") / "corpus"
    files = []
    for label in ("tone", "noise"):
        for i in range(3):
            write(root / label / f"{label}_{i}.wav", synth.demo_clip(label, i, SR), SR)
            files.append(f"{label}/{label}_{i}.wav,{i + 1}")
    labels = root.parent / "labels.csv"
    labels.write_text("file,take\n" + "\n".join(files) + "\n")
    ix = root.parent / "ix"
    out = CliRunner().invoke(cli, ["index", str(root), "--index", str(ix), "--labels", str(labels)])
    assert out.exit_code == 0, out.output
    return root, ix


def _one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)
    return result.output


def _query(root, ix, *args: str):
    return CliRunner().invoke(cli, ["query", str(root / "tone" / "tone_0.wav"), "--index", str(ix), *args])


# -- 18: --where type mismatches and deep nesting ------------------------------------------------


@pytest.mark.parametrize("where,needles", [
    ("take = 'abc'", ("'take'", "BIGINT", "'abc'", "not a number")),
    ("take > george", ("'take'", "'george'", "not a number")),
    ("indexed_at > 'notadate'", ("'indexed_at'", "'notadate'", "ISO date")),
    ("(" * 3000 + "take = 1" + ")" * 3000, ("deeper than",)),
    ("NOT " * 3000 + "take = 1", ("deeper than",)),
])
def test_where_mismatches_are_one_line_errors(indexed, where, needles):
    root, ix = indexed
    _one_line_error(_query(root, ix, "--where", where), *needles)


def test_where_values_that_fit_their_column_still_filter(indexed):
    root, ix = indexed
    expect = {"take = '2'": {2}, "take >= 2.5": {3}, "take LIKE '1%'": {1}, "indexed_at > '2000-01-01'": {1, 2, 3}}
    for where, takes in expect.items():
        out = _query(root, ix, "--where", where, "--json", "-k", "10")
        assert out.exit_code == 0, (where, out.output)
        assert {h["take"] for h in json.loads(out.stdout)} == takes, where


def test_compile_where_checks_values_against_column_types():
    cols = {"take": "BIGINT", "when": "TIMESTAMP WITH TIME ZONE", "ok": "BOOLEAN", "name": "VARCHAR"}
    assert compile_where("take = '3' AND name = 3", cols).params == (3, "3")
    assert compile_where("ok = true", cols).params == (True,)
    assert compile_where("take LIKE '1%'", cols).sql == "(CAST(f.\"take\" AS VARCHAR) LIKE ?)"
    for bad in ("take IN (1, two)", "ok = maybe", "when < yesterday"):
        with pytest.raises(InputError, match="is not"):
            compile_where(bad, cols)


# -- 18 / 16: query crop in the user's units ---------------------------------------------------------


@pytest.mark.parametrize("args,needles", [
    (("--start-s", "nan"), ("start_s", "finite")),
    (("--start-s", "inf"), ("start_s", "finite")),
    (("--end-s", "-inf"), ("end_s", "finite")),
    (("--start-s", "6"), ("start_s=6", "5.000 s long", "from 0 to below 5.000 s")),
    (("--start-s", "-1"), ("start_s=-1", "5.000 s long")),
    (("--start-s", "2", "--end-s", "1"), ("end_s=1", "(2, 5.000] s")),
])
def test_query_crop_errors_name_the_clip_duration(indexed, tmp_path, args, needles):
    root, ix = indexed
    clip = write(tmp_path / "five.wav", synth.sine(440, 5.0, SR), SR)
    out = CliRunner().invoke(cli, ["query", str(clip), "--index", str(ix), *args])
    _one_line_error(out, *needles)


def test_a_crop_inside_the_clip_still_works(indexed, tmp_path):
    root, ix = indexed
    clip = write(tmp_path / "five.wav", synth.sine(440, 5.0, SR), SR)
    out = CliRunner().invoke(cli, ["query", str(clip), "--index", str(ix), "--start-s", "4", "--end-s", "9"])
    assert out.exit_code == 0, out.output


# -- 19: a silent query clip is flagged ---------------------------------------------------------------


def test_a_silent_query_clip_warns_on_stderr_and_in_json(indexed, tmp_path):
    root, ix = indexed
    hush = write(tmp_path / "hush.wav", np.zeros(SR, np.float32), SR)
    out = CliRunner().invoke(cli, ["query", str(hush), "--index", str(ix), "--json"])
    assert out.exit_code == 0, out.output
    assert "warning: the query clip is silent" in out.stderr
    hits = json.loads(out.stdout)
    assert hits and all("silent" in h["query_warning"] for h in hits)

    loud = CliRunner().invoke(cli, ["query", str(root / "tone" / "tone_0.wav"), "--index", str(ix), "--json"])
    assert "warning" not in loud.stderr and "query_warning" not in json.loads(loud.stdout)[0]


# -- 16: locate with its arguments swapped --------------------------------------------------------------


def test_locate_with_swapped_arguments_says_so(tmp_path):
    short = write(tmp_path / "short.wav", synth.chirp(700, 2000, 0.5, SR), SR)
    long = write(tmp_path / "long.wav", synth.noise(6.0, SR, seed=3), SR)
    swapped = CliRunner().invoke(cli, ["locate", str(long), str(short), "--json"])
    assert swapped.exit_code == 0, swapped.output
    assert "swapped" in swapped.stderr and "6.00 s" in swapped.stderr and "0.50 s" in swapped.stderr
    assert any("swapped" in w for w in json.loads(swapped.stdout)["warnings"])
    right = CliRunner().invoke(cli, ["locate", str(short), str(long), "--json"])
    assert right.exit_code == 0 and "swapped" not in right.stderr and json.loads(right.stdout)["warnings"] == []


# -- every exception is rendered in one place --------------------------------------------------------------


def test_file_system_and_unexpected_errors_are_one_line(indexed, tmp_path, monkeypatch):
    root, ix = indexed
    out = CliRunner().invoke(cli, ["export", "--index", str(ix), str(tmp_path / "missing" / "dir" / "v.parquet")])
    _one_line_error(out, "missing")

    from retrieval.index import Index

    def broken(self, severity=None):
        raise ValueError("something nobody expected\nsecond line")

    monkeypatch.setattr(Index, "errors", broken)
    out = CliRunner().invoke(cli, ["errors", "--index", str(ix)])
    _one_line_error(out, "unexpected ValueError: something nobody expected", "RETRIEVE_TRACEBACK=1")
    monkeypatch.setenv("RETRIEVE_TRACEBACK", "1")
    out = CliRunner().invoke(cli, ["errors", "--index", str(ix)])
    assert isinstance(out.exception, ValueError)
