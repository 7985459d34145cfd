"""SMALL BEATs against the official code's outputs (golden files, random weights).

The checkpoint ``beats_small_random.pt`` is in the official format and is loaded
through the public path (``BeatsEncoder``). Tolerances are those of the golden README
(section 8): fbank 5e-4, hidden states 1e-4, masks and buckets exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from retrieval.encoders.base import EncoderOptions
from retrieval.encoders.beats import BeatsEncoder
from retrieval.encoders.beats.attention import relative_position_bucket

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TOL_FBANK = 5e-4
TOL_HIDDEN = 1e-4


@pytest.fixture(scope="module")
def small(beats_golden: Path) -> BeatsEncoder:
    return BeatsEncoder(EncoderOptions(model=str(beats_golden / "beats_small_random.pt")))


@pytest.fixture(scope="module")
def expected(beats_golden: Path) -> dict[str, np.ndarray]:
    with np.load(beats_golden / "expected_small.npz") as data:
        return dict(data)


@pytest.fixture(scope="module")
def inputs(beats_golden: Path) -> dict[str, np.ndarray]:
    with np.load(beats_golden / "inputs.npz") as data:
        return dict(data)


@pytest.fixture(scope="module")
def batch_run(small: BeatsEncoder, inputs: dict[str, np.ndarray]) -> tuple[dict, object]:
    """The official padded-batch run with every intermediate traced."""
    trace: dict = {}
    with torch.inference_mode():
        out = small.model.extract_features(
            torch.from_numpy(inputs["waveform_batch"]), torch.from_numpy(inputs["padding_mask"]), trace=trace
        )
    return trace, out


def maxdiff(a: torch.Tensor | np.ndarray, b: np.ndarray) -> float:
    """max |a - b| in float64, after checking shapes."""
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    assert a.shape == b.shape, f"shape {a.shape} != expected {b.shape}"
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def test_golden_inputs_are_what_the_readme_says(small: BeatsEncoder, inputs: dict[str, np.ndarray]) -> None:
    # README section 2 lists the checkpoint's sha256; the recipe hashes the same file.
    assert small.recipe()["checkpoint_sha256"] == "96e9360b21d3cb9c7fd57f651c33b4c9e21cf9db01f5fe9c6d7ce226c1e986bb"
    np.testing.assert_array_equal(inputs["lengths"], [160000, 68800, 17120])
    np.testing.assert_array_equal((~inputs["padding_mask"]).sum(1), inputs["lengths"])


@pytest.mark.parametrize("name", ["patch_embed_out", "patch_ln_out", "post_proj_out", "pos_conv_out"])
def test_batch_intermediates(batch_run, expected, name: str) -> None:
    trace, _ = batch_run
    assert maxdiff(trace[name], expected[f"batch_{name}"]) <= TOL_HIDDEN


def test_batch_fbank(batch_run, expected) -> None:
    trace, _ = batch_run
    assert maxdiff(trace["fbank"], expected["batch_fbank"]) <= TOL_FBANK


def test_batch_hidden_states(batch_run, expected) -> None:
    _, out = batch_run
    assert maxdiff(out.hidden_states[0], expected["batch_encoder_in"]) <= TOL_HIDDEN
    for i, layer in enumerate(expected["batch_layer_outputs"]):
        assert maxdiff(out.hidden_states[i + 1], layer) <= TOL_HIDDEN, f"layer {i + 1}"
    assert maxdiff(out.output, expected["batch_output"]) <= TOL_HIDDEN


def test_batch_masks_exact(batch_run, expected) -> None:
    trace, out = batch_run
    np.testing.assert_array_equal(trace["frame_padding_mask"].numpy(), expected["batch_frame_padding_mask"])
    np.testing.assert_array_equal(out.padding_mask.numpy(), expected["batch_output_padding_mask"])
    # README 7c: valid frames 998/430/107, valid tokens 496/215/54 (not time-aligned).
    np.testing.assert_array_equal((~trace["frame_padding_mask"]).sum(1).numpy(), [998, 430, 107])
    np.testing.assert_array_equal((~out.padding_mask).sum(1).numpy(), [496, 215, 54])


def test_relative_position_buckets_exact(expected) -> None:
    buckets = relative_position_bucket(torch.from_numpy(expected["rel_pos_offsets"]), 320, 800)
    np.testing.assert_array_equal(buckets.numpy(), expected["rel_pos_bucket"])


def test_official_features_public_method(small: BeatsEncoder, inputs, expected) -> None:
    tokens, mask = small.official_features(inputs["waveform_batch"], inputs["padding_mask"])
    assert maxdiff(tokens, expected["batch_output"]) <= TOL_HIDDEN
    np.testing.assert_array_equal(mask, expected["batch_output_padding_mask"])


@pytest.mark.parametrize("i", [0, 1, 2])
def test_single_clip_runs(small: BeatsEncoder, inputs, expected, i: int) -> None:
    wave = torch.from_numpy(inputs[f"wave{i}"])[None]
    trace: dict = {}
    with torch.inference_mode():
        out = small.model.extract_features(wave, torch.zeros(wave.shape, dtype=torch.bool), trace=trace)
        unmasked = small.model.extract_features(wave)
    assert maxdiff(trace["fbank"], expected[f"single{i}_fbank"]) <= TOL_FBANK
    assert maxdiff(out.hidden_states[0], expected[f"single{i}_encoder_in"]) <= TOL_HIDDEN
    for j, layer in enumerate(expected[f"single{i}_layer_outputs"]):
        assert maxdiff(out.hidden_states[j + 1], layer) <= TOL_HIDDEN, f"layer {j + 1}"
    assert maxdiff(out.output, expected[f"single{i}_output"]) <= TOL_HIDDEN
    np.testing.assert_array_equal(out.padding_mask.numpy(), expected[f"single{i}_output_padding_mask"])
    # An all-False mask and no mask give the same numbers; no mask returns no mask.
    assert unmasked.padding_mask is None
    assert torch.equal(unmasked.output, out.output)


def test_frame_embeddings_fold_the_official_single_clip_tokens(small: BeatsEncoder, inputs, expected) -> None:
    """frame_embeddings = official unpadded run per clip, 8 frequency tokens averaged per time patch."""
    frames = small.frame_embeddings(inputs["waveform_batch"], inputs["lengths"])
    for i in range(3):
        tokens = expected[f"single{i}_output"][0]  # (N, D)
        folded = tokens.reshape(-1, 8, tokens.shape[-1]).mean(axis=1)
        n_patches = folded.shape[0]
        assert frames.mask[i].sum() == n_patches and frames.mask[i, :n_patches].all()
        assert maxdiff(frames.embeddings[i, :n_patches], folded) <= TOL_HIDDEN
