"""Decoding in worker processes: same rows and vectors as in-process, crash- and OOM-safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import retrieval.ingest as ing
from retrieval import pipeline, synth
from retrieval.configure import Choices, resolve
from retrieval.embed import Batching, embed_windows, is_out_of_memory
from retrieval.encoders import build
from retrieval.errors import InputError
from retrieval.index import Index
from retrieval.ingest import IngestOptions, ingest
from retrieval.pipeline import DecodePool, WindowSpec, decode_task, group_files
from retrieval.store import Store
from tests._pipeline_tasks import crashing_task, deferring_task, failing_init, hanging_task
from tests.conftest import write


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Short clips at several rates, bad files, a silent one, and one long enough to stream in the main process."""
    root = tmp_path_factory.mktemp("mixed")
    synth.write_demo_corpus(root / "demo", per_class=3, sample_rate=16000)
    write(root / "rates" / "8k.wav", synth.chirp(300, 3000, 1.7, 8000), 8000)
    write(root / "rates" / "44k.flac", synth.noise(0.9, 44100, seed=2), 44100)
    write(root / "rates" / "stereo.wav", np.stack([synth.sine(300, 1.1, 22050), synth.sine(500, 1.1, 22050)], 1), 22050)
    write(root / "bad" / "silent.wav", np.zeros(9000, np.float32), 16000)
    nan = synth.sine(400, 1.0, 16000)
    nan[10:20] = np.nan
    write(root / "bad" / "nan.wav", nan, 16000, "FLOAT")
    (root / "bad" / "text.wav").write_text("not audio\n" * 40)
    (root / "bad" / "empty.wav").write_bytes(b"")
    # 9 s at 8 kHz: over the LONG_SAMPLES these tests set, so the main process streams it
    long = synth.noise(9.0, 8000, seed=5, amplitude=0.1) + np.tile(synth.sine(700, 1.0, 8000), 9)
    write(root / "long" / "long.wav", long, 8000)
    return root


def _table(ix: Path) -> tuple[list, list, list]:
    """Every file row, window row (vectors included) and error row, keyed by path, in a stable order."""
    with Store.open(ix) as s:
        con = s.db.con
        files = con.execute("SELECT path, status, n_samples, duration_s, sample_rate, channels, n_windows "
                            "FROM files ORDER BY path").fetchall()
        segs = con.execute("SELECT f.path, s.level, s.start_sample, s.end_sample, s.rms_db, s.silent, s.n_frames, "
                           "s.vector FROM windows s JOIN files f USING (file_id) "
                           "ORDER BY f.path, s.level, s.start_sample").fetchall()
        errors = con.execute("SELECT path, severity, stage, reason FROM errors ORDER BY path, severity").fetchall()
    return files, segs, errors


#: Window samples above which a worker hands a file back to the main process, in these tests.
LONG_SAMPLES = 200_000


@pytest.mark.parametrize("embed_in_workers", [True, False], ids=["workers-embed", "main-embeds"])
def test_workers_give_the_same_rows_and_vectors(mixed, tmp_path, monkeypatch, embed_in_workers):
    monkeypatch.setattr(pipeline, "LONG_FILE_SAMPLES", LONG_SAMPLES)  # read by ingest when it sets up a run
    if not embed_in_workers:  # the workers only decode; the encoder runs here, as for model encoders
        monkeypatch.setattr(ing, "embeds_in_workers", lambda encoder: False)
    opts = dict(commit_every=5, batch_size=4)
    s0 = ingest(mixed, tmp_path / "w0", Choices(), IngestOptions(workers=0, **opts))
    s2 = ingest(mixed, tmp_path / "w2", Choices(), IngestOptions(workers=2, **opts))
    for key in ("files_indexed", "files_failed", "files_silent", "warnings", "windows", "audio_seconds"):
        assert getattr(s0, key) == getattr(s2, key), key
    assert s2.files_failed == 2 and s2.files_silent == 1
    files0, segs0, errors0 = _table(tmp_path / "w0")
    files2, segs2, errors2 = _table(tmp_path / "w2")
    assert files2 == files0 and errors2 == errors0
    assert len(segs2) == len(segs0) and segs2 == segs0  # vectors bit for bit
    assert any(row[0] == "long/long.wav" for row in files2)


def test_long_file_is_streamed_by_the_main_process(mixed):
    spec = WindowSpec(16000, 64000, 32000, -60.0, long_samples=LONG_SAMPLES)
    d = decode_task([str(mixed / "long" / "long.wav"), str(mixed / "rates" / "8k.wav")], spec)
    assert d[0].long and d[0].audio.size == 0 and d[0].info.sample_rate == 8000
    assert not d[1].long and d[1].audio.size == d[1].report.out_samples


def test_a_full_task_defers_the_rest(mixed):
    paths = [str(p) for p in sorted((mixed / "demo" / "tone").glob("*.wav"))]
    d = decode_task(paths, WindowSpec(16000, 64000, 32000, -60.0, task_samples=1000))
    assert [x.deferred for x in d] == [False, True, True]


# -- worker-side failures -------------------------------------------------------------------


def test_a_worker_that_dies_costs_one_file(corpus, tmp_path, monkeypatch):
    crash = write(corpus / "tone" / "crash.wav", synth.sine(440, 0.8, 16000), 16000)
    monkeypatch.setattr(pipeline, "decode_task", crashing_task)
    warnings: list[str] = []
    s = ingest(corpus, tmp_path / "ix", Choices(), IngestOptions(workers=2, on_warning=warnings.append))
    assert s.files_failed == 1 and s.files_indexed == 20
    with Index.open(tmp_path / "ix") as idx:
        errors = idx.errors()
        assert list(errors.path) == ["tone/crash.wav"] and "died" in errors.reason[0]
        assert idx.info()["consistent"]
    assert any("crash.wav" in w for w in warnings)
    monkeypatch.undo()  # the next run decodes it normally
    again = ingest(corpus, tmp_path / "ix", Choices(), IngestOptions(workers=2))
    assert again.files_indexed == 1 and again.files_failed == 0 and crash.exists()


def test_a_worker_that_hangs_costs_one_file(corpus, tmp_path, monkeypatch):
    write(corpus / "tone" / "hang.wav", synth.sine(440, 0.8, 16000), 16000)
    monkeypatch.setattr(pipeline, "decode_task", hanging_task)
    monkeypatch.setattr(pipeline, "TASK_TIMEOUT_S", 8.0)  # generous: a fresh pool starts slowly on a loaded machine
    s = ingest(corpus, tmp_path / "ix", Choices(), IngestOptions(workers=2))
    assert s.files_failed == 1 and s.files_indexed == 20
    # two timeouts, not a hang: once in its task, then once alone, and never again
    assert [int(n) for n in (corpus / "tone" / "hang.wav.attempts").read_text().split()][-1] == 1
    assert len((corpus / "tone" / "hang.wav.attempts").read_text().split()) == 2
    with Index.open(tmp_path / "ix") as idx:
        errors = idx.errors()
        assert list(errors.path) == ["tone/hang.wav"] and "did not finish within 8 s" in errors.reason[0]
        assert idx.info()["consistent"]


def test_workers_that_cannot_start_hand_the_work_back(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "_worker_init", failing_init)
    warnings: list[str] = []
    s = ingest(corpus, tmp_path / "ix", Choices(), IngestOptions(workers=2, on_warning=warnings.append))
    assert s.files_indexed == 20 and s.files_failed == 0
    assert any("decoding workers cannot run" in w and "main process" in w for w in warnings)


def test_worker_side_decode_failures_are_recorded(tmp_path):
    root = tmp_path / "c"
    write(root / "ok.wav", synth.sine(300, 0.7, 16000), 16000)
    (root / "garbage.wav").write_bytes(os.urandom(3000))
    good = write(tmp_path / "t.wav", synth.sine(300, 2.0, 16000), 16000)
    (root / "cut_header.wav").write_bytes(good.read_bytes()[:30])
    s = ingest(root, tmp_path / "ix", Choices(), IngestOptions(workers=1))
    assert s.files_indexed == 1 and s.files_failed == 2
    with Index.open(tmp_path / "ix") as idx:
        errors = idx.errors().set_index("path")
    assert set(errors.index) == {"garbage.wav", "cut_header.wav"}
    assert (errors.stage == "decode").all() and errors.reason.str.contains("cannot decode").all()


def test_pool_yields_in_order_through_deferrals(corpus, monkeypatch):
    monkeypatch.setattr(pipeline, "decode_task", deferring_task)
    paths = sorted(str(p) for p in corpus.rglob("*.wav"))
    spec = WindowSpec(16000, 64000, 32000, -60.0)
    with DecodePool(2) as pool:
        got = list(pool.results(group_files([(p, p) for p in paths], lambda _: 0, files_per_task=4), spec))
    assert [item for item, _ in got] == paths
    assert all(d.error is None and not d.deferred and d.report.out_samples > 0 for _, d in got)


def test_group_files_bounds_count_and_bytes():
    sizes = [5, 5, 5, 20, 1, 1, 1, 1, 1]
    groups = list(group_files(list(range(len(sizes))), lambda i: sizes[i], files_per_task=3, task_bytes=12))
    assert groups == [[0, 1], [2], [3], [4, 5, 6], [7, 8]]


# -- kill -9 with workers ---------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import multiprocessing, sys, time
    from pathlib import Path
    import retrieval.ingest as ing
    original = ing._commit
    def commit(store, recipe, jobs, summary, warn):
        original(store, recipe, jobs, summary, warn)
        pids = " ".join(str(p.pid) for p in multiprocessing.active_children())
        print("COMMITTED", len(jobs), "PIDS", pids, flush=True)
        time.sleep(0.2)  # leave the parent time to kill us mid-run
    ing._commit = commit
    ing.ingest(Path(sys.argv[1]), Path(sys.argv[2]), options=ing.IngestOptions(commit_every=4, workers=2))
    print("FINISHED", flush=True)
""")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_kill_9_with_workers_then_rerun_resumes(tmp_path):
    corpus = tmp_path / "corpus"
    synth.write_demo_corpus(corpus, per_class=6)  # 30 files
    ix = tmp_path / "ix"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(corpus), str(ix)], stdout=subprocess.PIPE, text=True)
    committed, workers = 0, set()
    for line in child.stdout:
        if line.startswith("COMMITTED"):
            committed += int(line.split()[1])
            workers |= {int(p) for p in line.split("PIDS")[1].split()}
            if committed >= 8:
                child.send_signal(signal.SIGKILL)
                break
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL and workers
    deadline = time.monotonic() + 15
    while not all(_gone(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(p) for p in workers), "decoding workers outlived the killed ingest"

    with Store.open(ix) as store:
        n_files = store.db.con.execute("SELECT count(*) FROM files").fetchall()[0][0]
        assert committed <= n_files < 30
    summary = ingest(corpus, ix, options=IngestOptions(workers=2))
    assert summary.files_indexed == 30 - n_files and summary.files_unchanged == n_files
    with Store.open(ix) as store:
        rows = store.db.con.execute("SELECT count(*), count(DISTINCT path) FROM files").fetchall()[0]
        segs = store.db.con.execute("SELECT count(*), count(DISTINCT window_id) FROM windows").fetchall()[0]
        assert rows == (30, 30) and segs[0] == segs[1] and store.info()["consistent"]


# -- out of memory ----------------------------------------------------------------------------


class OomAbove:
    """Wraps an encoder; raises the given out-of-memory error for batches above ``limit`` rows
    or windows longer than ``max_samples``."""

    def __init__(self, inner, limit: int, error: type[BaseException] = RuntimeError, max_samples: int = 10**9):
        self.inner, self.limit, self.error, self.max_samples = inner, limit, error, max_samples
        self.sample_rate, self.dim, self.name = inner.sample_rate, inner.dim, inner.name
        self.calls: list[int] = []

    def recipe(self):
        return self.inner.recipe()

    def frame_embeddings(self, audio, lengths):
        self.calls.append(len(lengths))
        if len(lengths) > self.limit or int(max(lengths)) > self.max_samples:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner.frame_embeddings(audio, lengths)


def _oom_errors() -> list[type[BaseException]]:
    errors: list[type[BaseException]] = [RuntimeError, MemoryError]
    torch = pytest.importorskip("torch")
    errors.append(torch.cuda.OutOfMemoryError)
    return errors


@pytest.mark.parametrize("error", _oom_errors(), ids=lambda e: e.__name__)
def test_out_of_memory_halves_the_batch_and_keeps_the_vectors(error):
    enc = build("logmel")
    clips = [synth.demo_clip(c, i) for c in synth.DEMO_CLASSES for i in range(4)]
    expected, counts = embed_windows(enc, clips, "pyramid", 1)
    fake = OomAbove(enc, limit=3, error=error)
    batching = Batching(16)
    got, got_counts = embed_windows(fake, clips, "pyramid", batching)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got_counts, counts)
    assert batching.size == 2 and batching.halvings == 3  # 16 -> 8 -> 4 -> 2
    assert max(fake.calls[3:]) <= 3  # once halved, it stays small


def test_is_out_of_memory():
    assert is_out_of_memory(MemoryError()) and is_out_of_memory(RuntimeError("CUDA out of memory. Tried"))
    assert not is_out_of_memory(RuntimeError("shape mismatch")) and not is_out_of_memory(ValueError("out of memory"))


def test_ingest_survives_out_of_memory(corpus, tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    ingest(corpus, ref, Choices(), IngestOptions(batch_size=8))

    def resolve_oom(choices, stored):
        encoder, recipe = resolve(choices, stored)
        # no batch above 2 fits, and the two longest clips (over 30 000 samples) never fit at all
        return OomAbove(encoder, limit=2, max_samples=30_000), recipe

    monkeypatch.setattr(ing, "resolve", resolve_oom)
    warnings: list[str] = []
    s = ingest(corpus, tmp_path / "oom", Choices(), IngestOptions(batch_size=8, on_warning=warnings.append))
    assert any("batch size lowered from 8 to 1" in w for w in warnings)
    _, segs_ref, _ = _table(ref)
    files, segs, errors = _table(tmp_path / "oom")
    assert s.files_failed == len(errors) == 2 and all("out of memory" in e[3] for e in errors)
    failed = {e[0] for e in errors}
    assert segs == [row for row in segs_ref if row[0] not in failed]


# -- devices and threads ----------------------------------------------------------------------


def test_cuda_without_a_gpu_is_a_clear_error(corpus, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(InputError, match="--device cuda was requested but .*pass --device cpu"):
        ingest(corpus, tmp_path / "ix", Choices(device="cuda"))
    with pytest.raises(InputError, match="unknown device 'gpu9'"):
        ingest(corpus, tmp_path / "ix", Choices(device="gpu9"))
    assert not (tmp_path / "ix").exists()


def test_torch_threads_are_capped_at_usable_cores_whatever_the_workers():
    assert ing.torch_threads_for(8, cores=2) == 2 and ing.torch_threads_for(1, cores=2) == 1
    assert ing.torch_threads_for(0, cores=4) == 1


def test_torch_threads_are_restored(corpus, tmp_path):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ingest(corpus, tmp_path / "ix", Choices(), IngestOptions(workers=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_negative_workers_are_refused(corpus, tmp_path):
    with pytest.raises(InputError, match="workers must be 0"):
        ingest(corpus, tmp_path / "ix", Choices(), IngestOptions(workers=-1))


# -- choosing the workers ------------------------------------------------------------------


def test_auto_workers_spread_worker_embedded_encoders_over_the_cores():
    # where the idle cores cannot be read: workers only where two fit beside the main process
    assert ing.auto_workers("logmel", 3000, cores=2) == 0
    assert ing.auto_workers("logmel", 3000, cores=3) == 2  # the main process keeps a core to write rows
    assert ing.auto_workers("logmel", 3000, cores=4) == 3
    assert ing.auto_workers("wav2vec2", 3000, cores=2) == 1
    assert ing.auto_workers("logmel", 3000, cores=64) == ing.AUTO_WORKERS_MAX
    assert ing.auto_workers("wav2vec2", 3000, cores=8) == 1  # the model stays here; one worker decodes
    assert ing.auto_workers("logmel", ing.AUTO_WORKERS_MIN_FILES - 1, cores=8) == 0  # a pool costs more
    assert ing.auto_workers("logmel", 3000, cores=1) == 0


def test_auto_workers_start_one_worker_per_idle_core():
    assert ing.auto_workers("logmel", 3000, cores=2, spare=0.92) == 1  # a quiet 2-core machine
    assert ing.auto_workers("logmel", 3000, cores=2, spare=0.05) == 0  # another process has the other core
    assert ing.auto_workers("logmel", 3000, cores=2, spare=0.5) == 0
    assert ing.auto_workers("logmel", 3000, cores=2, spare=2.0) == 1  # never more than the cores but one
    assert ing.auto_workers("logmel", 3000, cores=8, spare=6.9) == 7
    assert ing.auto_workers("logmel", 3000, cores=8, spare=1.1) == 1  # six cores taken by others
    assert ing.auto_workers("logmel", 3000, cores=8, spare=0.0) == 0
    assert ing.auto_workers("logmel", 3000, cores=64, spare=63.0) == ing.AUTO_WORKERS_MAX
    assert ing.auto_workers("wav2vec2", 3000, cores=8, spare=0.0) == 1  # model encoders: as before
    assert ing.auto_workers("logmel", 3000, cores=4, spare=lambda: 2.6) == 2  # a reading, taken when needed
    assert ing.auto_workers("logmel", 3000, cores=4, spare=lambda: None) == 3  # unreadable: by core count


def test_auto_workers_start_no_pool_for_a_few_megabytes():
    enough = ing.AUTO_WORKERS_MIN_BYTES
    assert ing.auto_workers("logmel", 3000, cores=2, spare=1.0, size_bytes=enough) == 1
    assert ing.auto_workers("logmel", 3000, cores=2, spare=1.0, size_bytes=enough - 1) == 0  # 3,000 short clips
    assert ing.auto_workers("logmel", 3000, cores=8, size_bytes=4 << 20) == 0
    assert ing.auto_workers("wav2vec2", 3000, cores=8, size_bytes=4 << 20) == 0


def test_the_idle_reading_is_taken_only_when_the_answer_depends_on_it():
    calls: list[int] = []

    def reading() -> float:
        calls.append(1)
        return 1.0

    ing.auto_workers("logmel", 10, cores=2, spare=reading)  # too few files
    ing.auto_workers("logmel", 3000, cores=1, spare=reading)
    ing.auto_workers("wav2vec2", 3000, cores=4, spare=reading)
    assert not calls
    assert ing.auto_workers("logmel", 3000, cores=2, spare=reading) == 1 and calls == [1]


def test_a_run_reads_the_idle_cores_once_for_the_fork_server_and_the_pool(corpus, tmp_path, monkeypatch):
    """A first run decides whether to boot the fork server ahead after discovery, and sizes the
    pool after planning: both from one reading, so they cannot disagree."""
    from retrieval import spare_cores

    readings: list[float] = []
    pools: list[int] = []

    class Meter:
        def __init__(self) -> None:
            self.value: float | None = None

        def spare(self) -> float:
            if self.value is None:
                readings.append(0.9)
                self.value = 0.9
            return self.value

    monkeypatch.setattr(ing, "SpareCores", Meter)
    monkeypatch.setattr(ing, "AUTO_WORKERS_MIN_FILES", 1)
    monkeypatch.setattr(ing, "AUTO_WORKERS_MIN_BYTES", 0)
    monkeypatch.setattr(ing, "_usable_cores", lambda: 2)
    real_start = ing._start_pool

    def start_pool(stack, workers, warn, journal):
        pools.append(workers)
        return real_start(stack, workers, warn, journal)

    monkeypatch.setattr(ing, "_start_pool", start_pool)
    ingest(corpus, tmp_path / "ix", options=IngestOptions(workers=None, progress=False))
    assert readings == [0.9] and pools == [1]
    assert spare_cores.SpareCores is not Meter  # only ingest's name was replaced


def test_the_cli_leaves_workers_to_auto_and_the_library_keeps_zero(corpus, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from retrieval.cli import cli

    seen: list = []

    def fake_ingest(corpus, target, choices, options):
        seen.append(options.workers)
        raise InputError("stop here")

    monkeypatch.setattr(ing, "ingest", fake_ingest)
    CliRunner().invoke(cli, ["index", str(corpus), "--index", str(tmp_path / "ix")])
    CliRunner().invoke(cli, ["index", str(corpus), "--index", str(tmp_path / "ix"), "--workers", "3"])
    assert seen == [None, 3] and IngestOptions().workers == 0


def test_encoders_run_by_workers_load_neither_torch_nor_transformers():
    from retrieval.encoders.registry import entry, worker_embedded

    assert worker_embedded(), "no encoder is flagged embeds_in_workers"
    for name in worker_embedded():
        module = entry(name).target.partition(":")[0]
        code = (f"import sys, {module}\nfrom retrieval.encoders import build\nbuild({name!r})\n"
                "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "[]", name


def test_default_batches_hold_64_files_and_4_minutes_of_audio_at_most_1024_files():
    """Short clips are committed in fewer, larger transactions; ``--commit-every`` counts files alone."""
    assert not ing.batch_full(64, ing.COMMIT_AUDIO_S - 1, None)  # 64 short clips: keep going
    assert ing.batch_full(64, ing.COMMIT_AUDIO_S, None)
    assert not ing.batch_full(63, 10 * ing.COMMIT_AUDIO_S, None)  # long files: every 64, as before
    assert ing.batch_full(ing.COMMIT_MAX_FILES, 0.0, None)  # silent or failed files bound it too
    assert ing.batch_full(4, 0.0, 4) and not ing.batch_full(3, 1e9, 4)


@pytest.fixture
def late_workers(mixed, monkeypatch):
    """``(spec, paths, here)``: the workers' results come 0.2 s late (so the main process has time
    to help), with an encoder the workers run; ``here`` lists the groups decoded in this process.
    Timers are joined at teardown."""
    import threading
    from concurrent.futures import Future

    from retrieval.configure import resolve

    _, recipe = resolve(Choices(), None)
    spec = WindowSpec(recipe.sample_rate, recipe.window_samples, recipe.hop_samples, recipe.silence_db,
                      embed_recipe=recipe, long_samples=LONG_SAMPLES)
    paths = sorted(str(p) for p in mixed.rglob("*") if p.is_file())
    slow: list[threading.Timer] = []

    def late(self, group, spec):
        done: Future = Future()
        timer = threading.Timer(0.2, lambda: done.set_result(decode_task([p for p, _ in group], spec)))
        slow.append(timer)
        timer.start()
        return done

    here: list[list[str]] = []
    run_here = pipeline._run_here
    monkeypatch.setattr(DecodePool, "_submit", late)
    monkeypatch.setattr(pipeline, "_run_here", lambda group, spec: here.append([p for p, _ in group]) or run_here(group, spec))
    yield spec, paths, here
    for timer in slow:
        timer.join()


def test_the_main_process_decodes_while_the_workers_are_behind_with_the_same_results(late_workers, monkeypatch,
                                                                                    tmp_path):
    """With an encoder the workers run, groups the main process decodes while the head of the line
    is late give the files, vectors and order that the workers (or one process) give."""
    spec, paths, ran_here = late_workers
    groups = list(group_files([(p, p) for p in paths], lambda _: 0, files_per_task=2))
    journal = tmp_path / "journal.txt"
    seen: list[list[str]] = []
    write = pipeline._write_journal
    monkeypatch.setattr(pipeline, "_write_journal", lambda path, paths: seen.append(list(paths)) or write(path, paths))
    with DecodePool(1, journal=journal) as pool:
        got = list(pool.results(iter(groups), spec))
    assert ran_here, "the main process never helped"
    # each group decoded here was named in the journal before, and the journal emptied after
    assert seen[0::2] == ran_here and not any(seen[1::2])
    assert not journal.exists(), "a clean end removes the journal"
    alone = [d for g in groups for d in decode_task([p for p, _ in g], spec)]
    assert [item for item, _ in got] == paths
    for (_, d), ref in zip(got, alone):
        assert (d.error, d.long, d.report.out_samples) == (ref.error, ref.long, ref.report.out_samples)
        assert np.array_equal(d.starts, ref.starts) and np.array_equal(d.levels, ref.levels)
        if ref.vectors is not None:
            assert d.vectors.tobytes() == ref.vectors.tobytes()
            assert (d.file_vector is None) == (ref.file_vector is None)
            assert d.file_vector is None or d.file_vector.tobytes() == ref.file_vector.tobytes()


def test_files_a_dead_run_left_in_the_journal_go_to_the_workers_only(late_workers, tmp_path):
    """A run that died while the main process decoded a group left its paths in the journal: the
    next run does not decode those files itself (a crashing decoder then kills a worker, which
    is survivable), and still decodes other groups itself while the workers are late."""
    spec, paths, here = late_workers
    groups = list(group_files([(p, p) for p in paths], lambda _: 0, files_per_task=1))
    journal = tmp_path / "journal.txt"
    journal.write_text(f"{paths[1]}\n{paths[-1]}\n", encoding="utf-8")
    with DecodePool(1, journal=journal) as pool:
        assert pool.suspects == {paths[1], paths[-1]}
        got = list(pool.results(iter(groups), spec))
    assert [item for item, _ in got] == paths
    assert here, "the main process never helped"
    decoded_here = {p for g in here for p in g}
    assert paths[1] not in decoded_here and paths[-1] not in decoded_here
