"""The pipeline's demo mode: ``make run`` without a data root (or ``DATA=demo``) runs the whole
pipeline on the synthetic demo data root (:mod:`histoclr.demo`) with ``configs/pipeline/demo.yaml``.

Every MLflow run it makes carries the tag ``demo=true`` (``HISTOCLR_RUN_TAGS``, inherited by each
stage's process) and its report starts with a header saying the data is synthetic.
"""

from __future__ import annotations

import os
from pathlib import Path

from histoclr.config import load_config
from histoclr.config.pipeline import PipelineConfig
from histoclr.demo import DEMO_BANNER, DEMO_TAG, write_demo_root
from histoclr.tracking import RUN_TAGS_ENV

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "configs" / "pipeline" / "demo.yaml"
DEMO_WORDS = ("demo",)


def demo_wanted(data_root: str, demo: bool = False, if_missing: bool = False) -> bool:
    """Demo mode: asked for (``--demo``, ``data_root=demo``), or ``if_missing`` and no ``data_root``."""
    return demo or data_root in DEMO_WORDS or (if_missing and not Path(data_root).exists())


def banner(data_root: str) -> str:
    """The loud line said at the start and the end of a demo run."""
    text = DEMO_BANNER.format(data=data_root)
    if data_root in DEMO_WORDS:
        text = f"DATA={data_root}: " + text.split(": ", 1)[1]
    line = "=" * 100
    return f"\n{line}\n{text}\n{line}\n"


def demo_config(overrides: list[str], requested_root: str, config: str | Path = DEMO_CONFIG,
                seed: int = 0) -> PipelineConfig:
    """The demo's pipeline config (``overrides`` apply, except ``data_root``); writes the demo
    data root into ``<out_dir>/data``, tags every later run ``demo=true`` and prints the banner."""
    kept = [o for o in overrides if not o.startswith("data_root=")]
    cfg = load_config(PipelineConfig, config, kept)
    print(banner(requested_root), flush=True)
    root = write_demo_root(Path(cfg.out_dir) / "data", seed=seed)
    cfg.data_root, cfg.pairs = str(root.root), str(root.pairs)
    print(f"demo data root: {root.root} (synthetic; check it: histoclr data verify --root {root.root} "
          f"{root.manifest})", flush=True)
    tags = [t for t in os.environ.get(RUN_TAGS_ENV, "").split(",") if t and not t.startswith(f"{DEMO_TAG}=")]
    os.environ[RUN_TAGS_ENV] = ",".join([*tags, f"{DEMO_TAG}=true"])
    return cfg
