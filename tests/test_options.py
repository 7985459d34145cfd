"""Option sets are declared once (retrieval.options), checked once when an object is built, and
the CLI's choices read the same tuples."""

from __future__ import annotations

import pickle
from dataclasses import replace

import click
import numpy as np
import pytest

from retrieval import options
from retrieval.cli import cli
from retrieval.configure import Choices
from retrieval.errors import ChoiceError, InputError, UnknownNameError
from retrieval.ingest import IngestOptions
from retrieval.pooling import pool_file, pool_windows, pooled_dim
from retrieval.postprocess import Postprocess
from retrieval.recipe import Recipe


def _recipe(**changes: object) -> Recipe:
    base = Recipe(encoder="logmel", encoder_options={}, encoder_params={}, sample_rate=16000, window_samples=16000,
                  hop_samples=8000, pooling="mean", postprocess="whiten", precision="fp32", frame_dim=4, dim=4,
                  silence_db=None, versions={})
    return replace(base, **changes)  # type: ignore[arg-type]


def test_check_choice_returns_the_value_or_lists_the_valid_ones() -> None:
    assert options.check_choice("pooling", "meanstd", options.POOLING_MODES) == "meanstd"
    with pytest.raises(ChoiceError, match=r"unknown pooling 'median'; choose one of: mean, max, meanmax") as info:
        options.check_choice("pooling", "median", options.POOLING_MODES)
    err = info.value
    assert (err.option, err.value, err.choices) == ("pooling", "median", options.POOLING_MODES)
    # one typed error that older callers catch under either name
    assert isinstance(err, UnknownNameError) and isinstance(err, InputError)
    again = pickle.loads(pickle.dumps(err))  # crosses worker processes intact
    assert type(again) is ChoiceError and str(again) == str(err) and again.choices == err.choices
    with pytest.raises(ChoiceError):
        options.check_choice("pooling", None, options.POOLING_MODES)  # not a string at all


@pytest.mark.parametrize(("field", "value"), [("pooling", "median"), ("postprocess", "pca"), ("precision", "auto"),
                                              ("precision", "fp8")])
def test_a_recipe_refuses_an_unknown_mode_when_built(field: str, value: str) -> None:
    with pytest.raises(ChoiceError, match=f"'{value}'"):
        _recipe(**{field: value})


def test_a_recipe_round_trips_through_json() -> None:
    r = _recipe(pooling="pyramid", postprocess="center", precision="int8")
    assert Recipe.from_json(r.to_json()) == r


@pytest.mark.parametrize(("field", "value"), [("pooling", "avg"), ("postprocess", "zca"), ("precision", "fp64")])
def test_choices_refuse_an_unknown_mode_when_built(field: str, value: str) -> None:
    with pytest.raises(ChoiceError, match="choose one of"):
        Choices(**{field: value})  # type: ignore[arg-type]
    assert Choices(precision="auto").precision == "auto"  # what a user may ask for, resolved later


def test_ingest_options_refuse_an_unknown_index_type_when_built() -> None:
    with pytest.raises(ChoiceError, match="auto, flat, hnsw, ivfpq"):
        IngestOptions(index_type="annoy")  # type: ignore[arg-type]
    assert IngestOptions(index_type="auto").index_type == "auto"


def _choices_of(command: str, param: str) -> tuple[str, ...]:
    cmd = cli.commands[command]
    (found,) = [p for p in cmd.params if p.name == param]
    assert isinstance(found.type, click.Choice), f"{command} --{param} is not a choice"
    return tuple(found.type.choices)


@pytest.mark.parametrize(("command", "param", "expected"), [
    ("index", "pooling", options.POOLING_MODES),
    ("locate", "pooling", options.POOLING_MODES),
    ("index", "postprocess", options.POSTPROCESS_MODES),
    ("index", "precision", options.PRECISION_CHOICES),
    ("index", "index_type", options.INDEX_TYPE_CHOICES),
    ("eval", "level", options.LEVELS),
    ("compare", "level", options.LEVELS),
    ("errors", "severity", options.SEVERITIES),
    ("export", "vectors", options.VECTOR_KINDS),
    ("export", "level", options.EXPORT_LEVELS),
])
def test_cli_choices_are_the_declared_sets(command: str, param: str, expected: tuple[str, ...]) -> None:
    assert _choices_of(command, param) == expected


@pytest.mark.parametrize("mode", options.POOLING_MODES)
def test_every_declared_pooling_mode_is_implemented(mode: str) -> None:
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((3, 7, 4)).astype(np.float32)
    mask = np.ones((3, 7), bool)
    vectors, counts = pool_windows(frames, mask, mode)
    assert vectors.shape == (3, pooled_dim(mode, 4))
    file_vector = pool_file(vectors, counts, mode)
    assert (file_vector is None) == (mode == "none")


@pytest.mark.parametrize("mode", options.POSTPROCESS_MODES)
def test_every_declared_postprocess_mode_is_implemented(mode: str) -> None:
    x = np.random.default_rng(1).standard_normal((20, 6)).astype(np.float32)
    out = Postprocess.fit(mode, x).apply(x)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
