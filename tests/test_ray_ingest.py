"""``--engine ray`` on a local Ray: the same index as local ingest, and its faults.

One Ray per module (start-up costs seconds): ``ray.init(num_cpus=2)``, or the cluster at
``RETRIEVE_TEST_RAY_ADDRESS`` when set (a head started once with ``ray start --head``;
this checkout is put on its workers' path).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner

from retrieval import synth
from retrieval.cli import cli
from retrieval.index import Index
from retrieval.ingest import IngestOptions, IngestSummary, ingest
from retrieval.ray_ingest import Embedder

REPO = Path(__file__).resolve().parents[1]
COUNTS = ("files_indexed", "files_unchanged", "files_moved", "files_removed", "files_failed", "files_silent",
          "warnings", "windows")


def test_unreachable_address_is_one_line(tmp_path: Path) -> None:
    """Nothing listens there: one line naming the address, exit 1, no index folder made, Ray never started."""
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    corpus = tmp_path / "corpus"
    synth.write_demo_corpus(corpus, per_class=1)
    out = tmp_path / "idx"
    r = CliRunner().invoke(cli, ["index", str(corpus), "--index", str(out), "--engine", "ray",
                                 "--ray-address", f"127.0.0.1:{port}"])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "cannot reach" in lines[0], r.output
    assert not out.exists()


@pytest.mark.parametrize(("given", "passed"), [(None, "local"), ("local", "local"), ("auto", "auto")])
def test_no_address_starts_a_new_ray_instead_of_joining_one(monkeypatch: pytest.MonkeyPatch, given: str | None,
                                                            passed: str) -> None:
    """Ray's own default joins whatever cluster `ray start` last started here (or RAY_ADDRESS's);
    no --ray-address promises a new Ray on this machine, so it asks Ray for ``local``."""
    import types

    import retrieval.ray_ingest as ri

    calls: list[str | None] = []
    fake = types.SimpleNamespace(is_initialized=lambda: False,
                                 init=lambda address=None, **_: calls.append(address))
    monkeypatch.setattr(ri, "import_ray", lambda: fake)
    ri.RayEngine(address=given).connect()
    assert calls == [passed]


def test_ray_options_need_the_ray_engine(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    synth.write_demo_corpus(corpus, per_class=1)
    r = CliRunner().invoke(cli, ["index", str(corpus), "--index", str(tmp_path / "i"), "--actors", "4"])
    assert r.exit_code == 2 and "--engine ray" in r.output


def test_local_ingest_never_imports_ray(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    synth.write_demo_corpus(corpus, per_class=1)
    code = textwrap.dedent(f"""
        import sys
        from click.testing import CliRunner
        from retrieval.cli import cli
        r = CliRunner().invoke(cli, ["index", {str(corpus)!r}, "--index", {str(tmp_path / "i")!r}])
        assert r.exit_code == 0, r.output
        print("ray" in sys.modules)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


# -- on a local Ray -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Ray for this module; yields its address (for a second driver process)."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
    address = os.environ.get("RETRIEVE_TEST_RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    else:
        # Ray's raylet waits a fixed 15 s for its agents to start (ray-project/ray#65983). In
        # this venv every Ray process imports jsonschema, which builds rfc3987_syntax's Lark
        # grammar (installed for jupyter by the dev extra): 2-3 s of CPU, past 15 s on a busy
        # machine. Ray's processes (which inherit PYTHONPATH) get a stand-in that is absent.
        before = ray_process_path(tmp_path_factory)
        try:
            try:
                ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            except Exception as exc:  # the same deadline, missed once on a loaded machine: one more try
                if "timed out during startup" not in str(exc):
                    raise
                ray.shutdown()
                ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        finally:
            os.environ.pop("PYTHONPATH") if before is None else os.environ.__setitem__("PYTHONPATH", before)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def ray_process_path(tmp_path_factory: pytest.TempPathFactory) -> str | None:
    """Point PYTHONPATH (inherited by the Ray processes started next) at this checkout and the stand-in.

    Returns the old PYTHONPATH, for the caller to restore once Ray has started.
    """
    hidden = tmp_path_factory.mktemp("ray_path")
    (hidden / "rfc3987_syntax.py").write_text("raise ImportError('hidden from Ray processes in tests')\n")
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(hidden), str(REPO)] + ([before] if before else []))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster: no token to hand around
    return before


def _corpus(root: Path, fsdd: Path | None = None) -> Path:
    """Spoken digits (or synthetic clips), plus a file that cannot decode, a silent one and a long one."""
    if fsdd is not None:
        rec = sorted((fsdd / "recordings").glob("*.wav"))[::60][:24]
        for p in rec:
            dest = root / p.stem.split("_")[0] / p.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)
    else:
        synth.write_demo_corpus(root, per_class=3)
    (root / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really")
    sf.write(root / "quiet.wav", np.zeros(7001, np.float32), 16000)
    rng = np.random.default_rng(3)
    sf.write(root / "long.wav", (0.1 * rng.standard_normal(16000 * 9 + 123)).astype(np.float32), 16000)
    return root


def _engine(actors: int = 2):
    from retrieval.ray_ingest import RayEngine

    return RayEngine(actors=actors)


def _run(corpus: Path, out: Path, embedder=None, **kw) -> tuple[IngestSummary, list[str]]:
    lines: list[str] = []
    s = ingest(corpus, out, options=IngestOptions(on_warning=lines.append, embedder=embedder, **kw))
    return s, lines


def _dump(path: Path) -> dict:
    """What an index holds, keyed by path: files, windows, vectors, errors; ids checked for duplicates."""
    idx = Index.open(path)
    try:
        files = idx.files()[["path", "status", "n_windows", "n_samples", "duration_s", "sample_rate"]]
        window_meta, window_vecs = idx.embeddings("window", processed=False)
        file_meta, file_vecs = idx.embeddings("file", processed=False)
        errors = idx.errors()[["path", "severity", "stage", "reason"]].sort_values(["path", "reason"])
        errors["reason"] = errors["reason"].str.replace(r"'/[^']*'", "'<path>'", regex=True)  # corpora differ by folder
        info = idx.info()
    finally:
        idx.store.close()
    for meta in (window_meta, file_meta):
        assert meta["window_id"].is_unique
    assert files["path"].is_unique
    order = np.lexsort((window_meta["start_s"].to_numpy(), window_meta["path"].to_numpy()))
    return {"files": files.sort_values("path").reset_index(drop=True), "errors": errors.reset_index(drop=True),
            "windows": window_meta.iloc[order][["path", "start_s", "end_s"]].reset_index(drop=True),
            "window_vectors": window_vecs[order],
            "file_paths": file_meta["path"].tolist(), "file_vectors": file_vecs, "info": info}


def _assert_same(a: dict, b: dict) -> None:
    pd.testing.assert_frame_equal(a["files"], b["files"])
    pd.testing.assert_frame_equal(a["errors"], b["errors"])
    pd.testing.assert_frame_equal(a["windows"], b["windows"])
    va, vb = a["window_vectors"], b["window_vectors"]
    assert va.shape == vb.shape
    cos = (va * vb).sum(1) / np.maximum(np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1), 1e-12)
    assert cos.min() >= 0.99999
    fa = dict(zip(a["file_paths"], a["file_vectors"]))
    fb = dict(zip(b["file_paths"], b["file_vectors"]))
    assert fa.keys() == fb.keys()
    for k in fa:
        assert float(fa[k] @ fb[k]) / (np.linalg.norm(fa[k]) * np.linalg.norm(fb[k])) >= 0.99999
    assert a["info"]["consistent"] and b["info"]["consistent"]


def _counts(s: IngestSummary) -> dict:
    return {k: getattr(s, k) for k in COUNTS}


def test_same_index_as_local_ingest(ray_cluster: str, tmp_path: Path, request: pytest.FixtureRequest,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """FSDD subset with a broken, a silent and a long file: same files, windows, vectors, errors and hits."""
    import retrieval.ray_ingest as ri

    try:
        fsdd = request.getfixturevalue("fsdd")
    except pytest.skip.Exception:
        fsdd = None
    corpus = _corpus(tmp_path / "corpus", fsdd)
    monkeypatch.setattr(ri, "LONG_FILE_SAMPLES", 100_000)  # long.wav is streamed in its actor
    local, _ = _run(corpus, tmp_path / "local")
    on_ray, lines = _run(corpus, tmp_path / "ray", _engine(), commit_every=5)
    assert _counts(on_ray) == _counts(local)
    assert on_ray.files_failed == 1 and on_ray.files_silent == 1
    assert any("broken.wav" in line for line in lines)
    a, b = _dump(tmp_path / "local"), _dump(tmp_path / "ray")
    _assert_same(a, b)
    assert (a["window_vectors"] == b["window_vectors"]).all()  # log-mel is bit-exact in any process
    assert not list((tmp_path / "ray" / "shards").glob("*"))  # every shard merged and gone
    for path in (tmp_path / "local", tmp_path / "ray"):  # every search answers the same
        idx = Index.open(path)
        hits = [idx.search_indexed(k=5, file_id=int(fid))[["path", "score"]] for fid in idx.files()["file_id"][:6]]
        idx.store.close()
        if path.name == "local":
            expected = hits
    for h, e in zip(hits, expected):
        assert h["path"].tolist() == e["path"].tolist()
        np.testing.assert_allclose(h["score"], e["score"], atol=1e-5)


class DyingEmbedder(Embedder):
    """An embedding actor whose process dies on its first batch of a run.

    Once per run: a folder above the corpus holding ``die.once`` gets ``died`` when it happens.
    """

    def __call__(self, batch: dict) -> dict:
        first = Path(os.fsdecode(batch["path"][0]))
        for parent in first.parents:
            if (parent / "die.once").exists() and not (parent / "died").exists():
                (parent / "died").touch()
                os._exit(1)
        return super().__call__(batch)


def test_an_actor_killed_mid_run_loses_and_duplicates_nothing(ray_cluster: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import retrieval.ray_ingest as ri

    corpus = _corpus(tmp_path / "corpus")
    (tmp_path / "die.once").touch()
    monkeypatch.setattr(ri, "Embedder", DyingEmbedder)
    on_ray, _ = _run(corpus, tmp_path / "ray", _engine(), commit_every=4)
    assert (tmp_path / "died").exists()  # an actor did die
    local, _ = _run(corpus, tmp_path / "local")
    assert _counts(on_ray) == _counts(local)
    _assert_same(_dump(tmp_path / "local"), _dump(tmp_path / "ray"))


def test_a_killed_driver_leaves_shards_the_rerun_merges(ray_cluster: str, tmp_path: Path) -> None:
    """SIGKILL the driver after its second shard is written but before it is merged; a re-run uses that shard."""
    corpus = _corpus(tmp_path / "corpus")
    out = tmp_path / "ray"
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        import ray
        import retrieval.ray_ingest as ri
        from retrieval.ingest import IngestOptions, ingest
        ray.init(address={ray_cluster!r}, log_to_driver=False)
        merged = [0]
        real = ri.merge
        def merge(*a, **k):
            merged[0] += 1
            if merged[0] == 2:  # shard 2 is on disk, not merged
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, **k)
        ri.merge = merge
        ingest(Path({str(corpus)!r}), Path({str(out)!r}),
               options=IngestOptions(commit_every=3, embedder=ri.RayEngine(actors=2)))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert child.returncode == -9, child.stderr[-2000:]
    shards = list((out / "shards").glob("part-*.parquet"))
    assert len(shards) == 1  # the complete, unmerged one
    again, lines = _run(corpus, out, _engine())
    assert any("merged 3 files embedded by an earlier run" in line for line in lines), lines
    assert not list((out / "shards").glob("*"))
    local, _ = _run(corpus, tmp_path / "local")
    _assert_same(_dump(tmp_path / "local"), _dump(out))


def test_incremental_rerun_matches_local(ray_cluster: str, tmp_path: Path) -> None:
    """Add, change, move and delete files, then re-run: the same counts and index as local ingest."""
    base = _corpus(tmp_path / "base")
    runs = {}
    for name, embedder in (("local", None), ("ray", _engine())):
        corpus = tmp_path / f"corpus_{name}"
        shutil.copytree(base, corpus)
        _run(corpus, tmp_path / name, embedder)
        files = sorted(p for p in corpus.rglob("*.wav") if p.name not in ("broken.wav", "quiet.wav", "long.wav"))
        files[0].unlink()  # deleted
        files[1].rename(files[1].with_name("moved_" + files[1].name))  # moved
        audio, sr = sf.read(files[2], dtype="float32")
        sf.write(files[2], audio[: len(audio) // 2], sr)  # changed
        sf.write(corpus / "added.wav", 0.3 * np.sin(np.arange(12345) * 0.05).astype(np.float32), 16000)  # new
        runs[name], _ = _run(corpus, tmp_path / name, embedder)
    assert _counts(runs["ray"]) == _counts(runs["local"])
    assert runs["ray"].files_moved == 1 and runs["ray"].files_removed == 1 and runs["ray"].files_indexed == 2
    _assert_same(_dump(tmp_path / "local"), _dump(tmp_path / "ray"))
