"""Weight messages name a command the installed huggingface_hub has, and the cache it uses now.

``HF_HUB_CACHE`` / ``HF_HOME`` are set after huggingface_hub was imported (as a user's shell
or a notebook cell would before calling us), so a lookup that read them at import would miss.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import huggingface_hub.constants  # noqa: F401  imported first, as in any session that used it already
import pytest

from retrieval.encoders import weights
from retrieval.errors import WeightsNotFoundError

SHA = "0123456789abcdef0123456789abcdef01234567"


def fake_snapshot(cache: Path, repo: str = "org/tiny") -> Path:
    """A hub cache entry for ``repo`` as huggingface_hub lays it out, with a config.json."""
    entry = cache / ("models--" + repo.replace("/", "--"))
    snap = entry / "snapshots" / SHA
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(SHA)
    return snap


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "TRANSFORMERS_OFFLINE",
                "RETRIEVE_WAV2VEC2_MODEL"):
        monkeypatch.delenv(var, raising=False)
    # the package's scripts on PATH, as in an activated virtualenv
    monkeypatch.setattr(weights.shutil, "which", lambda name: f"/venv/bin/{name}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return monkeypatch


def test_hf_hub_cache_decides_where_checkpoints_are_found(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    snap = fake_snapshot(tmp_path / "elsewhere")
    clean_env.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert Path(weights.resolve_checkpoint("wav2vec2", "org/tiny")) == snap
    assert weights.hub_cache_dir() == tmp_path / "elsewhere"
    ok, where = weights.local_status(SimpleNamespace(name="wav2vec2", default_model="org/tiny"))
    assert ok and str(snap) in where


def test_hf_home_decides_where_checkpoints_are_found(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    snap = fake_snapshot(tmp_path / "home" / "hub")
    clean_env.setenv("HF_HOME", str(tmp_path / "home"))
    assert Path(weights.resolve_checkpoint("wav2vec2", "org/tiny")) == snap
    clean_env.setenv("HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(WeightsNotFoundError, match=f"not in the Hugging Face cache \\({tmp_path / 'empty' / 'hub'}\\)"):
        weights.resolve_checkpoint("wav2vec2", "org/tiny")


def test_messages_name_the_installed_download_command(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    entry = SimpleNamespace(name="wav2vec2", default_model="org/missing")
    # huggingface_hub here ships `hf` (it dropped `huggingface-cli` in 1.0)
    from importlib import metadata

    assert "hf" in {ep.name for ep in metadata.distribution("huggingface_hub").entry_points}
    ok, where = weights.local_status(entry)
    assert not ok and "`hf download org/missing`" in where and str(tmp_path / "cache") in where
    assert "HF_HUB_OFFLINE" in where
    with pytest.raises(WeightsNotFoundError) as err:
        weights.resolve_checkpoint("wav2vec2", "org/missing")
    message = str(err.value)
    assert "`hf download org/missing`" in message and "huggingface-cli" not in message
    assert f"models--org--missing folder from that machine's hub cache into {tmp_path / 'cache'}" in message
    assert "HF_HUB_OFFLINE is set, so no download was tried" in message

    clean_env.setattr(weights.shutil, "which", lambda name: None)  # installed without its scripts on PATH
    assert weights.download_command("org/missing").startswith("python -c ")
    clean_env.setattr(weights.shutil, "which", lambda name: f"/venv/bin/{name}")
    clean_env.setattr(weights, "_console_scripts", lambda: {"huggingface-cli"})  # an older huggingface_hub
    assert weights.download_command("org/missing") == "huggingface-cli download org/missing"
    clean_env.setattr(weights, "_console_scripts", lambda: set())  # no command installed at all
    one_liner = weights.download_command("org/missing")
    assert one_liner == "python -c \"from huggingface_hub import snapshot_download; snapshot_download('org/missing')\""


def test_the_cli_models_table_names_the_cache(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from retrieval.cli import cli

    clean_env.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    clean_env.delenv("RETRIEVE_CLAP_MODEL", raising=False)
    out = CliRunner().invoke(cli, ["models"])
    assert out.exit_code == 0, out.output
    assert "`hf download laion/clap-htsat-unfused`" in out.output and str(tmp_path / "cache") in out.output


def test_transformers_offline_is_named_when_it_is_the_one_set(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.delenv("HF_HUB_OFFLINE")
    clean_env.setenv("TRANSFORMERS_OFFLINE", "1")  # huggingface_hub honours it too
    clean_env.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="TRANSFORMERS_OFFLINE is set, so no download was tried"):
        weights.resolve_checkpoint("wav2vec2", "org/missing")
