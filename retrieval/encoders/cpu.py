"""What this CPU can run fast: native bfloat16 and int8 matrix units.

Read from the kernel's ``/proc/cpuinfo`` flags on Linux; elsewhere from torch
(``torch.backends.cpu.get_cpu_capability`` and oneDNN's bf16 check). The answer decides
which ``--precision`` modes are worth running (:mod:`retrieval.encoders.precision`):

* bf16 is native with ``avx512_bf16`` or ``amx_bf16``; without them torch emulates it, and
  CLAP ran 2-6x *slower* than fp32 (AMD EPYC without either flag, issue 16).
* int8 (dynamic quantisation) runs fbgemm's kernels, which need AVX2 (``avx2`` and ``fma``).

Torch is imported only on the fallback path.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: Any one of these flags means native bfloat16 arithmetic.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
#: All of these are needed for fbgemm's int8 kernels.
INT8_FLAGS = frozenset({"avx2", "fma"})
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuSupport:
    """Fast paths of this CPU.

    Attributes:
        native_bf16: bfloat16 matmuls run on hardware units (AVX512-BF16 or AMX-BF16).
        fast_int8: fbgemm's int8 kernels can run (AVX2 + FMA).
        amx: AMX tiles are present (``amx_bf16``).
        source: where the answer came from (``/proc/cpuinfo`` or ``torch``), for messages.
    """

    native_bf16: bool
    fast_int8: bool
    amx: bool
    source: str

    @classmethod
    def from_flags(cls, flags: Iterable[str], source: str = "/proc/cpuinfo") -> CpuSupport:
        """From CPU flag names as ``/proc/cpuinfo`` spells them (e.g. ``avx512_bf16``)."""
        names = {f.lower() for f in flags}
        return cls(native_bf16=bool(names & BF16_FLAGS), fast_int8=INT8_FLAGS <= names,
                   amx="amx_bf16" in names, source=source)


def cpuinfo_flags(text: str) -> frozenset[str]:
    """The flags of the first processor in ``/proc/cpuinfo`` text (empty when there are none)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_support() -> CpuSupport:
    """This machine's :class:`CpuSupport` (read once per process)."""
    try:
        flags = cpuinfo_flags(CPUINFO.read_text())
    except OSError:
        flags = frozenset()
    if flags:
        return CpuSupport.from_flags(flags)
    import torch

    capability = torch.backends.cpu.get_cpu_capability()  # "DEFAULT", "AVX2", "AVX512", ...
    try:
        bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        bf16 = False
    return CpuSupport(native_bf16=bf16, fast_int8=capability.startswith("AVX"), amx=False, source="torch")
