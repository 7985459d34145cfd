"""FULL-size BEATs (12 x 768, the released architecture) against the official code.

There is no FULL checkpoint on disk: the weights are rebuilt with numpy from
``weights_manifest_full.json`` (per-key seeded normal draws, README section 4), every
tensor is checked against its sha256, written to a temporary official-format ``.pt``
and loaded through the same public path as a real checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from retrieval.encoders.base import EncoderOptions
from retrieval.encoders.beats import BeatsEncoder

#: Suggested tolerance for FULL hidden states (README section 8); fbank uses 5e-4.
TOL_FULL = 2e-4
TOL_FBANK = 5e-4


def rebuild_weights(manifest: dict) -> dict[str, np.ndarray]:
    """State dict (name -> float32 array, manifest order) from a weights manifest.

    Each tensor is ``mean + std * RandomState(crc32("0:" + key)).standard_normal(shape)``
    cast to float32, or a copy of another key. Raises ``ValueError`` on a seed or sha256 mismatch.
    """
    base = manifest.get("base_seed", 0)
    state: dict[str, np.ndarray] = {}
    for entry in manifest["tensors"]:
        key, shape = entry["key"], tuple(entry["shape"])
        if entry["copy_of"] is not None:
            value = state[entry["copy_of"]].copy()
        else:
            seed = zlib.crc32(f"{base}:{key}".encode("utf-8"))
            if seed != entry["seed"]:
                raise ValueError(f"{key}: seed {seed} != manifest {entry['seed']}")
            z = np.random.RandomState(seed).standard_normal(size=shape)
            value = (entry["mean"] + entry["std"] * z).astype(np.float32)
        digest = hashlib.sha256(np.ascontiguousarray(value, dtype="<f4").tobytes()).hexdigest()
        if digest != entry["sha256_f32"]:
            raise ValueError(f"{key}: rebuilt tensor sha256 {digest[:12]} != manifest {entry['sha256_f32'][:12]}")
        state[key] = value
    return state


def write_checkpoint(manifest: dict, path: Path) -> Path:
    """Rebuild the manifest's weights and save them as an official-format checkpoint at ``path``."""
    state = {k: torch.from_numpy(v) for k, v in rebuild_weights(manifest).items()}
    torch.save({"cfg": manifest["cfg"], "model": state}, path)
    return path


@pytest.fixture(scope="module")
def full_encoder(beats_golden: Path, tmp_path_factory: pytest.TempPathFactory) -> BeatsEncoder:
    manifest = json.loads((beats_golden / "weights_manifest_full.json").read_text())
    path = write_checkpoint(manifest, tmp_path_factory.mktemp("beats_full") / "beats_full_random.pt")
    encoder = BeatsEncoder(EncoderOptions(model=str(path)))
    path.unlink()  # 361 MB; the model is in memory now
    return encoder


def _maxdiff(a: torch.Tensor | np.ndarray, b: np.ndarray) -> float:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a
    assert a.shape == b.shape, f"shape {a.shape} != expected {b.shape}"
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


@pytest.mark.slow
def test_full_parity_with_official(full_encoder: BeatsEncoder, beats_golden: Path) -> None:
    expected = np.load(beats_golden / "expected_full.npz")
    wave0 = np.load(beats_golden / "inputs.npz")["wave0"][None]
    assert full_encoder.dim == 768 and full_encoder.config.encoder_layers == 12

    trace: dict = {}
    with torch.inference_mode():
        out = full_encoder.model.extract_features(
            torch.from_numpy(wave0), torch.zeros(wave0.shape, dtype=torch.bool), trace=trace
        )
    diffs = {name: _maxdiff(trace[name], expected[name])
             for name in ("patch_embed_out", "patch_ln_out", "post_proj_out", "pos_conv_out")}
    diffs["encoder_in"] = _maxdiff(out.hidden_states[0], expected["encoder_in"])
    for i in range(12):
        diffs[f"layer_{i + 1}"] = _maxdiff(out.hidden_states[i + 1], expected["layer_outputs"][i])
    diffs["output"] = _maxdiff(out.output, expected["output"])
    fbank_diff = _maxdiff(trace["fbank"], expected["fbank"])
    print("FULL max|diff|:", {"fbank": fbank_diff, **diffs})

    assert fbank_diff <= TOL_FBANK
    bad = {k: v for k, v in diffs.items() if v > TOL_FULL}
    assert not bad, f"FULL stages over {TOL_FULL}: {bad}"
    np.testing.assert_array_equal(out.padding_mask.numpy(), expected["output_padding_mask"])
