"""One autocast for both training stages and inference (`histoclr.precision`)."""

from __future__ import annotations

import pytest
import torch

from histoclr.errors import HistoclrError
from histoclr.precision import autocast


def test_autocast_runs_bf16_matmuls_and_nothing_at_32():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with autocast("cpu", "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast("cpu", "32"):
        assert (a @ b).dtype == torch.float32
    with pytest.raises(ValueError, match="precision must be one of bf16, fp16, 32, got 'fp8'"):
        autocast("cpu", "fp8")
    with pytest.raises(HistoclrError, match="fp16 needs a CUDA GPU"):
        autocast("cpu", "fp16")
