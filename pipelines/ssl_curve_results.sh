#!/usr/bin/env bash
# Write the SSL curve's section of docs/results.md ("SSL curve (CPU)": tables, paired differences by
# seed, the target verdict, the curve over snapshots) and its plots (docs/img/ssl_curve/) from the
# sweep in mlflow.db, finished or still running (then every number is marked provisional).
# The report's own files go to runs/ssl_curve_report/. Extra arguments pass through, e.g. --note "...".
#   bash pipelines/ssl_curve_results.sh [--note "what the numbers say"]
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python pipelines/ablation_results.py --experiment histoclr-ssl-curve --section "SSL curve (CPU)" \
    --img ssl_curve --out runs/ssl_curve_report \
    --command "bash pipelines/ssl_curve.sh && bash pipelines/ssl_curve_results.sh" "$@"
