"""benchmarks/bench_precision.py: its step builders run the project's models in both precisions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_precision.py"
spec = importlib.util.spec_from_file_location("bench_precision", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_finetune_step_trains_the_model_in_both_precisions(precision):
    step = bench.finetune_step(precision)
    # the closure's optimiser holds the model's parameters: a step must change them
    opt = next(c.cell_contents for c in step.__closure__ if hasattr(c.cell_contents, "param_groups"))
    model_params = [p for g in opt.param_groups for p in g["params"]]
    before = model_params[0].detach().clone()
    assert bench.time_steps(step, steps=1, warmup=0) > 0
    assert not model_params[0].detach().equal(before)


def test_cpu_bf16_units_names_flags_or_none():
    units = bench.cpu_bf16_units()
    assert units == "none" or set(units.split(", ")) <= {"amx_bf16", "avx512_bf16"}
