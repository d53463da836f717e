"""benchmarks/gpu_check.py --smoke: every phase of the one-GPU check runs on the CPU and reports sane values."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
PHASES = ["simclr_model_only", "simclr_model_only_compiled", "simclr_end_to_end_png", "simclr_end_to_end_jpeg",
          "simclr_data_only_png", "simclr_data_only_jpeg", "finetune_seg", "predict"]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_smoke_runs_every_phase_and_writes_only_its_own_doc(tmp_path):
    out = tmp_path / "work"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=380, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["sizes"]["device"] == "cpu" and report["env"]["torch"]
    res = report["results"]
    for phase in PHASES:
        assert phase in res and not ({"error", "skipped"} & set(res[phase])), (phase, res.get(phase))
        assert res[phase]["peak_gpu_mem_gib"] is None           # no GPU: no made-up memory figure
    for phase in ("simclr_model_only", "simclr_model_only_compiled"):
        r = res[phase]
        assert _positive(r["views_per_s"]) and _positive(r["s_per_step"]) and r["timed_steps"] >= 1
        assert r["compile"] is phase.endswith("compiled") and r["arch"] == "resnet18"
    for fmt in ("png", "jpeg"):
        e2e = res[f"simclr_end_to_end_{fmt}"]
        assert _positive(e2e["views_per_s"]) and 0 <= e2e["data_wait_share"] <= 1
        assert _positive(e2e["ratio_to_model_only"])
        assert math.isclose(e2e["ratio_to_model_only"], e2e["views_per_s"] / res["simclr_model_only"]["views_per_s"])
        assert e2e["tiles"] >= 4 and e2e["workers"] == 2          # tiles written by the real tiler
        assert _positive(res[f"simclr_data_only_{fmt}"]["views_per_s"])
    assert _positive(res["finetune_seg"]["images_per_s"]) and Path(res["finetune_seg"]["checkpoint"]).is_file()
    pred = res["predict"]
    # a 128 px image in 64 px windows overlapping by 1/4: starts 0, 48, 64 on each side
    assert pred["tiles"] == 9 and _positive(pred["tiles_per_s"]) and 0 < pred["network_share"] <= 1
    doc = (out / "benchmarks.md").read_text()
    assert "<!-- BEGIN GPU check (one GPU) -->" in doc and "Smoke run on the CPU" in doc
    for phase in PHASES:
        assert f"| {phase} |" in doc
    assert "Smoke run on the CPU" not in (REPO / "docs" / "benchmarks.md").read_text()


def test_smoke_refuses_the_real_doc(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path),
                           "--doc", str(REPO / "docs" / "benchmarks.md")], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "never writes docs/benchmarks.md" in proc.stderr
