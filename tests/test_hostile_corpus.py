"""Issue 11's hostile corpus, end to end through the CLI, in bounded time and memory.

The corpus holds ordinary files beside a FIFO named ``y.wav``, a link to ``/dev/zero``, a
name that is not UTF-8, a 1 Hz file, a file and a folder that cannot be read. Every ordinary file
must be indexed and every other one recorded in ``errors``; a hang fails the test (the CLI
runs under a deadline) instead of blocking the suite.

A file or folder made ``chmod 000`` is still readable by root, so when the suite runs as root the
CLI runs with ``CAP_DAC_OVERRIDE`` and ``CAP_DAC_READ_SEARCH`` dropped from its capability
bounding set: it is still root, but file modes now apply to it, so both are really
unreadable (no injected failure).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval import synth
from retrieval.audio.paths import real_path
from retrieval.index import Index
from tests.conftest import write

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/proc/self/status"),
                                reason="needs Linux: FIFOs, /dev/zero and /proc/self/status")

#: Seconds one `retrieve index` may take here; a hang on a FIFO or /dev/zero ran forever.
DEADLINE_S = 180
#: Peak RSS one `retrieve index` may reach; the 1 Hz file alone once took 1.45 GB.
MAX_RSS_MB = 900
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2
#: Runs the CLI, then prints its peak RSS (KB) on stderr: VmHWM, the high-water mark of this
#: program's own memory. (``ru_maxrss`` would not do: Linux carries it over ``exec`` from the
#: forked copy of the pytest worker, which can be larger than anything the CLI does.)
_MEASURED = ("import atexit, re, sys\n"
             "def peak():\n"
             "    with open('/proc/self/status') as f:\n"
             "        print('PEAK_RSS_KB', re.search(r'VmHWM:\\s+(\\d+)', f.read()).group(1), file=sys.stderr)\n"
             "atexit.register(peak)\n"
             "from retrieval.cli import main\n"
             "sys.argv[0] = 'retrieve'\n"
             "main()\n")


def _without_dac_override() -> None:
    """preexec_fn: file permissions apply to this (root) child after exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _preexec_for_unreadable(path: Path):
    """How to run a child for which ``path`` (mode 000) really is unreadable, or skip."""
    if os.geteuid() != 0:
        return None
    probe = [sys.executable, "-c", f"import os; os.open({str(path)!r}, os.O_RDONLY)"]
    try:
        denied = subprocess.run(probe, preexec_fn=_without_dac_override, capture_output=True, timeout=60)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE here ({exc})")
    if b"PermissionError" not in denied.stderr:
        pytest.skip("running as root and file modes do not apply even without CAP_DAC_OVERRIDE")
    return _without_dac_override


def _index(corpus: Path, ix: Path, preexec) -> tuple[dict, str, float]:
    """``retrieve index CORPUS --index IX --json`` under the deadline: (summary, stderr, peak RSS MB)."""
    try:
        proc = subprocess.run([sys.executable, "-c", _MEASURED, "index", str(corpus), "--index", str(ix), "--json"],
                              capture_output=True, text=True, errors="replace", timeout=DEADLINE_S,
                              preexec_fn=preexec)
    except subprocess.TimeoutExpired:
        pytest.fail(f"retrieve index did not finish within {DEADLINE_S} s: it hung on the hostile corpus")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    peak_kb = int(proc.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr, peak_kb / 1024


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    root = tmp_path / "hostile"
    write(root / "ok" / "tone.wav", synth.sine(440, 0.8, 16000), 16000)
    write(root / "ok" / "chirp.flac", synth.chirp(300, 4000, 1.1, 22050), 22050)
    write(root / "ok" / "noise.wav", synth.noise(0.7, 44100, seed=2), 44100)
    # a 1 Hz file: 1,500 samples (3 KB) are 25 minutes at 16 kHz
    write(root / "slow" / "one_hz.wav", np.random.default_rng(0).uniform(-0.5, 0.5, 1500).astype(np.float32), 1)
    os.mkfifo(root / "y.wav")
    os.symlink("/dev/zero", root / "zero.wav")
    name = os.path.join(os.fsencode(root / "ok"), b"caf\xe9 \xff.wav")  # latin-1 and a stray byte
    os.rename(write(root / "tmp.wav", synth.clicks(4, 0.9, 16000), 16000), name)
    write(root / "locked" / "inside.wav", synth.sine(660, 0.6, 16000), 16000)
    write(root / "secret.wav", synth.sine(770, 0.6, 16000), 16000).chmod(0)  # an unreadable file
    return root


def test_hostile_corpus_through_the_cli(hostile, tmp_path):
    ix = tmp_path / "ix"
    ordinary = {"ok/tone.wav", "ok/chirp.flac", "ok/noise.wav", 'ok/"caf\\xe9 \\xff.wav"', "slow/one_hz.wav"}
    special = {"y.wav": "FIFO", "zero.wav": "character device", "secret.wav": "permission denied"}
    preexec = _preexec_for_unreadable(hostile / "secret.wav")

    first, _, first_rss = _index(hostile, ix, preexec)  # the folder is readable on the first run
    assert first["files_indexed"] == len(ordinary) + 1 and first["files_failed"] == len(special)

    (hostile / "locked").chmod(0)
    try:
        second, stderr, second_rss = _index(hostile, ix, preexec)
    finally:
        (hostile / "locked").chmod(0o755)

    assert second["files_removed"] == 0 and second["files_indexed"] == 0
    assert second["files_unchanged"] == len(ordinary)  # the file under the folder is unknown this time
    assert second["files_failed"] == len(special) + 1  # the special files and the folder
    assert "skipped locked: cannot read folder" in stderr
    print(f"peak RSS {first_rss:.0f} MB, then {second_rss:.0f} MB")
    assert max(first_rss, second_rss) < MAX_RSS_MB, f"peak RSS {first_rss:.0f} / {second_rss:.0f} MB"

    with Index.open(ix) as idx:
        files = idx.files().set_index("path")
        errors = idx.errors().set_index("path")
        assert idx.info()["consistent"]
    assert set(files.index) == ordinary | {"locked/inside.wav"}  # kept, not removed
    assert (files.status == "ok").all()
    assert files.loc["slow/one_hz.wav", "duration_s"] == pytest.approx(1500.0)
    for path, kind in special.items():
        assert errors.loc[path, "severity"] == "error" and kind in errors.loc[path, "reason"]
    assert errors.loc["locked", "severity"] == "error" and "Permission denied" in errors.loc["locked", "reason"]
    assert set(errors.index) == set(special) | {"locked"}
    # the stored name leads back to the file on disk, byte for byte
    assert os.fsencode(real_path(hostile, 'ok/"caf\\xe9 \\xff.wav"')).endswith(b"/ok/caf\xe9 \xff.wav")
    assert real_path(hostile, 'ok/"caf\\xe9 \\xff.wav"').is_file()
