"""The ablation's section of docs/results.md from a sweep (logic: histoclr/recipes/ablation_results.py).

    python pipelines/ablation_results.py --tracking-uri sqlite:///$PWD/mlflow.db --command "histoclr ablate configs/ablation/cpu.yaml"
"""

from histoclr.recipes.ablation_results import main

if __name__ == "__main__":
    main()
