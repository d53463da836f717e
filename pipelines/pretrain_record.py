"""The record of the long pretraining run in docs/ (logic: histoclr/recipes/pretrain_record.py).

    python pipelines/pretrain_record.py --run-dir runs/pretrain_dense_cpu --out docs/pretrain_dense_cpu_run
"""

from histoclr.recipes.pretrain_record import main

if __name__ == "__main__":
    main()
