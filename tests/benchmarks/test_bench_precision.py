"""benchmarks/bench_precision.py: its step builders train the project's models in both precisions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_precision.py"
spec = importlib.util.spec_from_file_location("bench_precision", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize("make", [bench.simclr_step, bench.finetune_step], ids=["simclr", "finetune"])
@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_a_timed_training_step_changes_the_weights(make, precision):
    model, step = make(precision)
    weight = next(model.parameters())
    before = weight.detach().clone()
    bench.time_steps(step, steps=1, warmup=0)
    assert not weight.detach().equal(before)


def test_cpu_bf16_units_reads_the_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("flags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n")
    assert bench.cpu_bf16_units(info) == "amx_bf16"
    info.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16\n")
    assert bench.cpu_bf16_units(info) == "amx_bf16, avx512_bf16"
    info.write_text("flags\t\t: fpu avx2\n")
    assert bench.cpu_bf16_units(info) == "none"
    assert bench.cpu_bf16_units(tmp_path / "absent") == "none"
