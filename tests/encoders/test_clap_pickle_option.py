"""The pickle refusal for a LAION ``.pt`` names a CLI option that exists, and that option works."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from click.testing import CliRunner  # noqa: E402
from transformers import ClapModel  # noqa: E402

from retrieval.cli import cli  # noqa: E402
from retrieval.encoders.clap import laion_convert  # noqa: E402
from tests.conftest import write  # noqa: E402
from tests.encoders._clap_models import set_offline, tiny_clap  # noqa: E402


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    set_offline(monkeypatch)


def pickled_laion(folder: Path, out: Path) -> Path:
    """``folder``'s weights in LAION's layout, saved with an object only full unpickling restores."""
    sd = laion_convert.hf_to_laion(ClapModel.from_pretrained(folder).state_dict())
    torch.save({"epoch": 1, "args": Path("train.yaml"), "state_dict": {f"module.{k}": v for k, v in sd.items()}}, out)
    return out


def test_the_refusal_names_an_option_that_exists_and_it_works(tmp_path_factory: pytest.TempPathFactory,
                                                               tmp_path: Path) -> None:
    folder = tiny_clap(tmp_path_factory)
    pt = pickled_laion(folder, tmp_path / "trained.pt")
    corpus = tmp_path / "corpus"
    rng = np.random.default_rng(3)
    for name in ("a.wav", "b.wav"):
        write(corpus / name, (0.3 * rng.standard_normal(16000)).astype(np.float32), 16000)
    args = ["index", str(corpus), "--index", str(tmp_path / "ix"), "--encoder", "clap", "--model", str(pt),
            "--opt", f"processor={folder}", "--postprocess", "none"]

    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 1 and refused.output.startswith("Error: ") and "Traceback" not in refused.output
    assert "--opt trust_pickle=true" in refused.output and "--encoder-option" not in refused.output
    help_text = CliRunner().invoke(cli, ["index", "--help"]).output
    assert "--opt KEY=VALUE" in help_text

    done = CliRunner().invoke(cli, [*args, "--opt", "trust_pickle=true", "--json"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.output[done.output.rindex('{"files_indexed"'):])  # after transformers' stderr bars
    assert summary["files_indexed"] == 2 and summary["files_failed"] == 0
    query = CliRunner().invoke(cli, ["query", str(corpus / "a.wav"), "--index", str(tmp_path / "ix"), "--json"])
    assert query.exit_code == 0, query.output
    assert json.loads(query.output)[0]["path"] == "a.wav"
