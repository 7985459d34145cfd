"""``--precision auto`` and the slow-mode warning, on faked CPU flags.

The flags are faked by pointing :data:`retrieval.encoders.cpu.CPUINFO` at a written
``/proc/cpuinfo``, so the real parser runs. The speed facts the rules encode were measured
(``retrieval.encoders.precision`` docstring): bf16 is slower than fp32 without native bf16,
int8 was slower than fp32 on short clips where bf16 is native.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from retrieval import encoders
from retrieval.cli import cli
from retrieval.configure import Choices, resolve
from retrieval.encoders import cpu as cpu_module
from retrieval.encoders.cpu import CpuSupport, cpuinfo_flags
from retrieval.encoders.precision import (
    AUTO_MIN_COSINE,
    PRECISION_CHOICES,
    SlowPrecisionWarning,
    check_precision,
    choose,
)
from retrieval.errors import InputError

#: Flag sets of three kinds of machine (trimmed to what matters, plus a few neighbours).
AMD_EPYC = "fpu sse sse2 avx avx2 fma avx512f avx512bw avx512vl avx512_vnni"  # no bf16 units
AMD_BF16 = AMD_EPYC + " avx512_bf16"  # bf16 on AVX-512, no AMX
INTEL_AMX = AMD_BF16 + " amx_bf16 amx_tile amx_int8"
OLD_CPU = "fpu sse sse2 sse4_2 avx"  # no AVX2: no fbgemm int8 kernels
#: What ``auto`` picks for a torch encoder on each machine, and a mode measured slower than
#: fp32 there (never picked; None where every mode was faster).
EXPECTED = {AMD_EPYC: ("int8", "bf16"), AMD_BF16: ("int8", None), INTEL_AMX: ("bf16", "int8"),
            OLD_CPU: ("fp32", "bf16")}

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture
def fake_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Call with a flags line: this process then sees a CPU with those flags."""

    def use(flags: str) -> None:
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nvendor_id\t: Fake\nflags\t\t: {flags}\n\n"
                        f"processor\t: 1\nflags\t\t: {flags}\n")
        monkeypatch.setattr(cpu_module, "CPUINFO", info)
        cpu_module.cpu_support.cache_clear()

    yield use
    cpu_module.cpu_support.cache_clear()


@pytest.fixture(scope="module")
def tiny_beats(tiny_beats_checkpoint: Callable[..., Path]) -> str:
    return str(tiny_beats_checkpoint(seed=3))


def test_cpuinfo_flags_are_read_from_the_first_processor() -> None:
    assert cpuinfo_flags("processor : 0\nflags : avx2 fma amx_bf16\n\nflags : sse\n") == {"avx2", "fma", "amx_bf16"}
    assert cpuinfo_flags("processor : 0\nFeatures : fp asimd bf16\n") == {"fp", "asimd", "bf16"}  # arm64
    assert cpuinfo_flags("") == frozenset()


@pytest.mark.parametrize(("flags", "bf16", "int8"), [(AMD_EPYC, False, True), (AMD_BF16, True, True),
                                                     (INTEL_AMX, True, True), (OLD_CPU, False, False)])
def test_cpu_support_from_faked_flags(fake_cpu: Callable[[str], None], flags: str, bf16: bool, int8: bool) -> None:
    fake_cpu(flags)
    support = cpu_module.cpu_support()
    assert (support.native_bf16, support.fast_int8, support.source) == (bf16, int8, "/proc/cpuinfo")


@pytest.mark.parametrize("flags", list(EXPECTED))
@pytest.mark.parametrize("name", encoders.names())
def test_auto_never_picks_a_mode_slower_than_fp32(fake_cpu: Callable[[str], None], flags: str, name: str) -> None:
    fake_cpu(flags)
    cosines = encoders.entry(name).load_class().precision_cosine
    picked = choose(cosines, "cpu")
    fastest, slower_than_fp32 = EXPECTED[flags]
    assert picked != slower_than_fp32
    assert picked == (fastest if fastest in cosines else "fp32")
    assert cosines[picked] >= AUTO_MIN_COSINE


def test_auto_skips_a_mode_beyond_the_stated_cosine_and_other_devices() -> None:
    amd = CpuSupport.from_flags(AMD_EPYC.split())
    assert choose({"fp32": 1.0, "int8": 0.99}, "cpu", amd) == "fp32"
    assert choose({"fp32": 1.0, "int8": AUTO_MIN_COSINE}, "cpu", amd) == "int8"
    assert choose({"fp32": 1.0, "bf16": 0.999, "fp16": 0.999}, "cuda:0", amd) == "fp32"  # not measured there


def test_bf16_without_native_bf16_warns_before_the_model_loads(fake_cpu: Callable[[str], None],
                                                                 tmp_path: Path) -> None:
    fake_cpu(AMD_EPYC)
    with pytest.warns(SlowPrecisionWarning, match=r"bf16 is emulated on this CPU .*index with --precision auto"):
        check_precision("bf16", "cpu")
    with pytest.warns(SlowPrecisionWarning):  # the encoder checks before it reads its checkpoint
        with pytest.raises(Exception, match="missing.pt"):
            resolve(Choices(encoder="beats", model=str(tmp_path / "missing.pt"), precision="bf16"), None)
    fake_cpu(INTEL_AMX)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowPrecisionWarning)
        check_precision("bf16", "cpu")
        check_precision("int8", "cpu")


def test_auto_is_not_a_precision_an_encoder_takes() -> None:
    with pytest.raises(InputError, match="'auto' must be resolved"):
        check_precision("auto", "cpu")


@pytest.mark.parametrize(("flags", "expected"), [(AMD_EPYC, "int8"), (INTEL_AMX, "bf16"), (OLD_CPU, "fp32")])
def test_resolve_records_what_auto_picked(fake_cpu: Callable[[str], None], tiny_beats: str, flags: str,
                                          expected: str) -> None:
    fake_cpu(flags)
    encoder, recipe = resolve(Choices(encoder="beats", model=tiny_beats, precision="auto"), None)
    _, explicit = resolve(Choices(encoder="beats", model=tiny_beats, precision=expected), None)
    assert (recipe.precision, encoder.recipe()["precision"]) == (expected, expected)
    assert "auto" not in recipe.to_json()
    assert recipe.hash() == explicit.hash()
    # On an existing index, auto keeps the stored mode (never a mismatch with the index).
    fake_cpu(AMD_EPYC if flags != AMD_EPYC else INTEL_AMX)
    with warnings.catch_warnings(record=True) as caught:  # a bf16 index on a CPU without bf16 still warns
        warnings.simplefilter("always", SlowPrecisionWarning)
        _, again = resolve(Choices(precision="auto"), recipe)
    assert [w.category for w in caught] == ([SlowPrecisionWarning] if expected == "bf16" else [])
    assert again.precision == expected and again.hash() == recipe.hash()


def test_logmel_auto_is_fp32() -> None:
    _, recipe = resolve(Choices(precision="auto"), None)
    assert recipe.precision == "fp32"


def test_cli_takes_auto_and_prints_the_slow_warning_as_one_line(
        fake_cpu: Callable[[str], None], tiny_beats: str, tmp_path: Path) -> None:
    option = next(p for p in cli.commands["index"].params if p.name == "precision")
    assert list(option.type.choices) == list(PRECISION_CHOICES) and "auto" in option.help
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(0)
    sf.write(corpus / "a.wav", (0.1 * rng.standard_normal(9000)).astype(np.float32), 16000)
    fake_cpu(AMD_EPYC)
    runner = CliRunner()
    slow = runner.invoke(cli, ["index", str(corpus), "--index", str(tmp_path / "slow"), "--encoder", "beats",
                               "--model", tiny_beats, "--precision", "bf16", "--no-progress"])
    assert slow.exit_code == 0, slow.output
    lines = [line for line in slow.stderr.splitlines() if "bf16 is emulated" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: precision bf16"), slow.stderr
    auto = runner.invoke(cli, ["index", str(corpus), "--index", str(tmp_path / "auto"), "--encoder", "beats",
                               "--model", tiny_beats, "--precision", "auto", "--no-progress"])
    assert auto.exit_code == 0 and "emulated" not in auto.stderr, auto.output
    info = json.loads(runner.invoke(cli, ["info", "--index", str(tmp_path / "auto"), "--json"]).output)
    assert info["recipe"]["precision"] == "int8", info
