"""Opt-in fast modes for model encoders (CLAP, wav2vec2 family).

* ``fp32``: the reference numerics.
* ``bf16``: the towers run under ``torch.autocast`` in bfloat16 (matmuls and convolutions;
  the front end, layer norms and softmax stay float32). Fast on CPUs with AVX512-BF16 or
  AMX and on recent GPUs; elsewhere it is emulated and slower than fp32.
* ``int8``: ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` (weights
  int8, activations quantised per batch at run time). CPU only.

The chosen mode is part of the encoder's recipe, so an index never mixes modes. The
cosine to fp32 vectors is measured by ``scripts/bench_clap.py``.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, ContextManager, Literal, get_args

import torch

from retrieval.errors import InputError, UnknownNameError

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def check_precision(precision: str, device: str) -> Precision:
    """Return ``precision`` if valid on ``device``; an unknown one lists the valid ones.

    Raises:
        UnknownNameError: not one of :data:`PRECISIONS`.
        InputError: ``int8`` on a non-CPU device.
    """
    if precision not in PRECISIONS:
        raise UnknownNameError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision == "int8" and torch.device(device).type != "cpu":
        raise InputError(f"precision int8 (dynamic quantisation) runs on the CPU only; got device {device!r}: "
                         "use --precision bf16 on accelerators")
    return precision  # type: ignore[return-value]


def prepare(model: Any, precision: Precision) -> Any:
    """The model to run for ``precision`` (``int8``: its Linear layers quantised in place)."""
    if precision != "int8":
        return model
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*quantiz", category=UserWarning)
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def autocast(precision: Precision, device: str) -> ContextManager[Any]:
    """The context the forward pass runs in: bf16 autocast, or nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN reports native bfloat16 support on this CPU (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
