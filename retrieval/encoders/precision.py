"""Opt-in fast modes for model encoders (CLAP, wav2vec2 family, BEATs).

* ``fp32``: the reference numerics.
* ``fp16``: the towers run under ``torch.autocast`` in float16, for GPUs without bfloat16
  (T4, V100). Not on the CPU: torch 2.13 CPU autocast accepts float16 but has no fast
  kernels for it on CPUs without AVX512-FP16 / AMX-FP16. Measured here (AMD EPYC with
  AVX512-BF16): a Linear 768 -> 3072 on 64 rows 4.7x fp32's time, BEATs on 100 FSDD files
  1.6x fp32's and 2.4x bf16's time (cosine to fp32 1.00000: no accuracy to gain over fp32).
  :func:`check_precision` therefore refuses it on the CPU and names bf16.
* ``bf16``: the towers run under ``torch.autocast`` in bfloat16 (matmuls and convolutions;
  the front end, layer norms and softmax stay float32). Fast on CPUs with AVX512-BF16 or
  AMX and on recent GPUs; elsewhere it is emulated and slower than fp32.
* ``int8``: ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` (weights
  int8, activations quantised per forward pass at run time, with one scale for the whole
  input tensor: rows sharing a forward pass would influence each other, so every
  encoder runs one window per forward pass under int8). CPU only.

* ``auto`` (:func:`choose`): the fastest of an encoder's modes on this machine that stays
  within :data:`AUTO_MIN_COSINE` of fp32, resolved before the encoder loads; the recipe
  records the mode it resolved to, never ``auto``.

Speed depends on the CPU (:mod:`retrieval.encoders.cpu`). Measured with full-size random
weights, 2 threads, each mode against fp32 in the same run (``docs/bench_ingest.md``):

* Intel Xeon with AMX-BF16 (2026-12-01): bf16 2.0-2.7x fp32's speed (CLAP; BEATs on 10 s
  windows), but 0.9x for BEATs on sub-second clips (CPU time, 1 thread); int8 0.56-2.2x,
  slower than fp32 on short clips (BEATs 0.56x, CLAP 0.88x).
* AMD EPYC with AVX512-BF16, no AMX (2026-11-21): time against fp32, bf16 0.68-0.93x,
  int8 0.48-0.84x (wav2vec2, BEATs, CLAP).
* AMD EPYC without AVX512-BF16 or AMX (issue 16): bf16 2-6x *slower* than fp32 (CLAP,
  emulated); int8 1.24x fp32's speed on short clips, 1.5x on long files (CLAP).
  :func:`check_precision` warns (:class:`SlowPrecisionWarning`) on bf16 there.

The chosen mode is part of the encoder's recipe, so an index never mixes modes. The
cosine to fp32 vectors and the effect on nearest neighbours are measured by
``scripts/bench_ingest.py --sections precision`` (``docs/bench_ingest.md``).

Torch is imported inside the functions, so the CLI can take its ``--precision`` choices
from :data:`PRECISIONS` without loading it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from typing import Any, ContextManager

from retrieval.encoders.cpu import CpuSupport, cpu_support
from retrieval.errors import InputError
# Precision and PRECISIONS, PrecisionChoice and PRECISION_CHOICES (``auto`` is resolved by :func:`choose`)
from retrieval.options import PRECISION_CHOICES, PRECISIONS, Precision, PrecisionChoice, check_choice  # noqa: F401
#: ``auto`` only picks a mode whose stated worst cosine to fp32 (an encoder's
#: ``precision_cosine``) is at least this.
AUTO_MIN_COSINE = 0.999
#: Stated worst cosine to fp32 of each mode the torch encoders (wav2vec2, BEATs, CLAP) run:
#: the bound ``tests/encoders/test_precision.py`` holds tiny random models to (measured
#: 0.9998-1.0), met by full-size random weights on 100 FSDD files (bf16 >= 0.99995, int8 >=
#: 0.99911; docs/bench_ingest.md). fp16 is CUDA only and not measured there; forced on the CPU
#: it gave 1.00000.
TORCH_PRECISION_COSINE: Mapping[str, float] = {"fp32": 1.0, "fp16": 0.999, "bf16": 0.999, "int8": 0.999}
#: Precisions that run under :func:`autocast`, and the name of their torch compute dtype.
AUTOCAST_DTYPES: dict[str, str] = {"fp16": "float16", "bf16": "bfloat16"}


class SlowPrecisionWarning(UserWarning):
    """A precision that runs, but slower than fp32 on this machine (the CLI prints it as one line)."""


def check_precision(precision: str, device: str) -> Precision:
    """Return ``precision`` if valid on ``device``; an unknown one lists the valid ones.

    Raises:
        ChoiceError: not one of :data:`PRECISIONS`.
        InputError: ``int8`` on a non-CPU device; ``fp16`` on the CPU; ``auto`` (resolve it
            first with :func:`choose`).

    Warns:
        SlowPrecisionWarning: ``bf16`` on a CPU without native bf16 (emulated: slower than fp32).
    """
    import torch

    if precision == "auto":
        raise InputError("precision 'auto' must be resolved before an encoder is built: pass a concrete one "
                         f"({', '.join(PRECISIONS)}) or use retrieval.encoders.precision.choose()")
    check_choice("precision", precision, PRECISIONS)
    if precision == "fp16" and torch.device(device).type == "cpu":
        raise InputError("precision fp16 is for GPUs without bfloat16 (T4, V100); on the CPU float16 has no fast "
                         "kernels and ran slower than fp32 (BEATs 1.6x): use --precision bf16 on the CPU "
                         "(or fp32, or int8)")
    if precision == "int8" and torch.device(device).type != "cpu":
        raise InputError(f"precision int8 (dynamic quantisation) runs on the CPU only; got device {device!r}: "
                         "use --precision bf16 on accelerators")
    if precision == "bf16" and torch.device(device).type == "cpu" and not (cpu := cpu_support()).native_bf16:
        warnings.warn(SlowPrecisionWarning(
            f"precision bf16 is emulated on this CPU (no avx512_bf16 or amx_bf16, per {cpu.source}) and runs "
            "slower than fp32 (CLAP 2-6x slower on such a CPU): index with --precision auto (int8 or fp32 "
            "here) or fp32"),
            stacklevel=2)
    return precision  # type: ignore[return-value]


def speed_order(device: str, cpu: CpuSupport | None = None) -> tuple[Precision, ...]:
    """Precisions worth running on ``device``, fastest first, each measured faster than fp32.

    On the CPU (see the module docstring for the runs):

    * AMX-BF16: ``bf16, fp32`` (bf16 2.0-2.7x fp32, except BEATs on sub-second clips: 0.9x;
      int8 was slower than fp32 on short clips);
    * AVX512-BF16 without AMX: ``int8, bf16, fp32`` (time against fp32: int8 0.48-0.84x, bf16
      0.68-0.93x);
    * no native bf16 but AVX2: ``int8, fp32`` (bf16 is emulated there: 2-6x slower than fp32);
    * otherwise ``fp32``.

    On other devices ``fp32`` only: no accelerator was measured, so ``auto`` makes no claim there.

    Args:
        device: torch device string.
        cpu: the CPU's fast paths; this machine's (:func:`~retrieval.encoders.cpu.cpu_support`) when None.
    """
    if not device.startswith("cpu"):
        return ("fp32",)
    cpu = cpu or cpu_support()
    order: tuple[Precision, ...] = ("fp32",)
    if cpu.native_bf16:
        order = ("bf16", *order)
    if cpu.fast_int8 and not cpu.amx:
        order = ("int8", *order)
    return order


def choose(cosines: Mapping[str, float], device: str, cpu: CpuSupport | None = None) -> Precision:
    """Resolve ``auto``: the fastest precision an encoder runs on ``device`` within :data:`AUTO_MIN_COSINE`.

    Args:
        cosines: the encoder's ``precision_cosine``: each precision it runs -> its stated worst
            cosine to fp32 (fp32 -> 1.0).
        device: torch device string.
        cpu: as in :func:`speed_order`.

    Returns:
        A concrete precision, never slower than fp32 on this machine; ``fp32`` when nothing faster fits.
    """
    for precision in speed_order(device, cpu):
        if cosines.get(precision, 0.0) >= AUTO_MIN_COSINE:
            return precision
    return "fp32"


def prepare(model: Any, precision: Precision) -> Any:
    """The model to run for ``precision`` (``int8``: its Linear layers quantised in place)."""
    if precision != "int8":
        return model
    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*quantiz", category=UserWarning)
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def rows_per_pass(precision: Precision, rows: int) -> int:
    """The most rows one forward pass may hold at ``precision``, given an encoder's own limit ``rows``.

    1 under ``int8``: dynamic quantisation computes one activation scale over a pass's whole
    input, so rows sharing a pass would move each other's vectors (CLAP: cosine 0.9998).
    """
    return 1 if precision == "int8" else rows


def autocast(precision: Precision, device: str) -> ContextManager[Any]:
    """The context the forward pass runs in: bf16 or fp16 autocast, or nothing."""
    if precision not in AUTOCAST_DTYPES:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=torch.device(device).type, dtype=getattr(torch, AUTOCAST_DTYPES[precision]))


def full_precision(device: str) -> ContextManager[Any]:
    """A region that stays float32 inside :func:`autocast` (e.g. a front end kept at parity)."""
    import torch

    return torch.autocast(device_type=torch.device(device).type, enabled=False)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has native bfloat16 (AVX512-BF16 / AMX; see :mod:`retrieval.encoders.cpu`)."""
    return cpu_support().native_bf16
