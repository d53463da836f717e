"""Nucleus segmentation quality target vs the classical baseline (logic: histoclr/recipes/seg_quality.py).

    python pipelines/seg_quality_target.py [--config configs/finetune/cpu.yaml] [--init auto] [key=value ...]
"""

from histoclr.recipes.seg_quality import main

if __name__ == "__main__":
    main()
