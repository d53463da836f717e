"""The whole pipeline on one data root: tile -> pretrain -> ablate -> report (logic: histoclr/recipes/pipeline.py).

    python pipelines/run_all.py --config configs/pipeline/cpu.yaml [--doc] [key=value ...]
"""

from histoclr.recipes.pipeline import main

if __name__ == "__main__":
    main()
