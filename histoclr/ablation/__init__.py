"""Ablation sweeps (init x freeze x label budget x seed) as MLflow parent/child runs, and reports."""
