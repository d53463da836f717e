#!/usr/bin/env bash
# Write the SSL curve's section of docs/results.md ("SSL curve (CPU)": tables, paired differences by
# seed, the target verdict, the curve over snapshots) and its plots (docs/img/ssl_curve/) from the
# sweep in mlflow.db, finished or still running (then every number is marked provisional).
# The report's own files go to runs/ssl_curve_report/. The paragraph on what the numbers say is
# docs/ssl_curve_cpu_run/note.md (edit it when the numbers change). Extra arguments pass through.
#   bash pipelines/ssl_curve_results.sh
set -euo pipefail
cd "$(dirname "$0")/.."
note=docs/ssl_curve_cpu_run/note.md
[[ -f $note ]] || echo "warning: $note is missing: the section gets no paragraph on what the numbers say" >&2
.venv/bin/python pipelines/ablation_results.py --experiment histoclr-ssl-curve --section "SSL curve (CPU)" \
    --img ssl_curve --out runs/ssl_curve_report --note "$(cat "$note" 2>/dev/null || true)" \
    --command "bash pipelines/ssl_curve.sh && bash pipelines/ssl_curve_results.sh" "$@"
