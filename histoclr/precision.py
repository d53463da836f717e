"""Mixed precision for both training stages (SimCLR and fine-tuning) and for inference.

``precision`` is ``"32"`` (float32), ``"bf16"`` (autocast to bfloat16: GPUs, and CPUs with
AMX-BF16 / AVX512-BF16 units) or ``"fp16"`` (autocast to float16 with a GradScaler: CUDA only).
The names are :data:`histoclr.config.ssl.PRECISIONS`.
"""

from __future__ import annotations

import contextlib

import torch

from histoclr.config.ssl import PRECISIONS
from histoclr.errors import HistoclrError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(device_type: str, precision: str) -> None:
    """Raise ``ValueError`` for an unknown precision, ``HistoclrError`` for fp16 off CUDA."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device_type != "cuda":
        raise HistoclrError("precision fp16 needs a CUDA GPU; use bf16 or 32 on CPU")


def autocast(device_type: str, precision: str) -> contextlib.AbstractContextManager:
    """The context a forward pass runs in at ``precision`` on ``device_type`` ("cpu", "cuda"):
    autocast to bf16 / fp16, or nothing at "32" (:func:`check_precision` first)."""
    check_precision(device_type, precision)
    dtype = AMP_DTYPES.get(precision)
    return torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
