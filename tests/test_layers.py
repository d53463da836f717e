"""The layers import downward only: config and the low layer (images, slide reader, manifests)
import no stage (ssl, pretrain, seg, ablation, cli) and no heavy library at import time."""

from __future__ import annotations

import subprocess
import sys

import pytest

STAGES = ("histoclr.ssl", "histoclr.pretrain", "histoclr.seg", "histoclr.ablation", "histoclr.cli",
          "histoclr.stl10", "histoclr.recipes")
HEAVY = ("torch", "mlflow", "openslide", "segmentation_models_pytorch", "albumentations")
LOW = ["histoclr.config.loader", "histoclr.config.ssl", "histoclr.config.seg", "histoclr.config.pretrain",
       "histoclr.config.tile", "histoclr.config.ablation", "histoclr.config.stl10", "histoclr.config.pipeline",
       "histoclr.images", "histoclr.slides.reader", "histoclr.manifests.csvfile", "histoclr.manifests.tiles",
       "histoclr.manifests.pairs", "histoclr.manifests.data", "histoclr.dataroot"]


@pytest.mark.parametrize("module", LOW)
def test_low_modules_import_no_stage_and_nothing_heavy(module):
    code = (f"import sys, {module}\n"
            f"bad = sorted(m for m in sys.modules if m.startswith({STAGES!r}) or m.split('.')[0] in {HEAVY!r})\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"{module} imports {out}"
