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

The chosen mode is part of the encoder's recipe, so an index never mixes modes. The
cosine to fp32 vectors and the effect on nearest neighbours are measured by
``scripts/bench_ingest.py --sections precision`` (``docs/bench_ingest.md``).

Torch is imported inside the functions, so the CLI can take its ``--precision`` choices
from :data:`PRECISIONS` without loading it.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, ContextManager, Literal, get_args

from retrieval.errors import InputError, UnknownNameError

Precision = Literal["fp32", "fp16", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
#: Precisions that run under :func:`autocast`, and the name of their torch compute dtype.
AUTOCAST_DTYPES: dict[str, str] = {"fp16": "float16", "bf16": "bfloat16"}


def check_precision(precision: str, device: str) -> Precision:
    """Return ``precision`` if valid on ``device``; an unknown one lists the valid ones.

    Raises:
        UnknownNameError: not one of :data:`PRECISIONS`.
        InputError: ``int8`` on a non-CPU device; ``fp16`` on the CPU.
    """
    import torch

    if precision not in PRECISIONS:
        raise UnknownNameError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision == "fp16" and torch.device(device).type == "cpu":
        raise InputError("precision fp16 is for GPUs without bfloat16 (T4, V100); on the CPU float16 has no fast "
                         "kernels and ran slower than fp32 (BEATs 1.6x): use --precision bf16 on the CPU "
                         "(or fp32, or int8)")
    if precision == "int8" and torch.device(device).type != "cpu":
        raise InputError(f"precision int8 (dynamic quantisation) runs on the CPU only; got device {device!r}: "
                         "use --precision bf16 on accelerators")
    return precision  # type: ignore[return-value]


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
    """Whether oneDNN reports native bfloat16 support on this CPU (AVX512-BF16 / AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
