#!/usr/bin/env bash
# The SSL curve sweep (configs/ablation/ssl_curve_cpu.yaml: 90 fine-tuning cells, random init and
# the pretraining snapshots of steps 250, 2000, 4000 and 8000, 1 / 2 / 10 labelled images, 3 seeds), in the
# background, logged to runs/ssl_curve/log.txt (appended). The target's 24 cells run first (the
# config's run_first), each block seed by seed, so every finished seed of a block is a complete paired
# comparison. Re-running this script resumes: finished cells
# (MLflow child runs) are skipped, a cell cut off half-way starts again; it does nothing while
# the sweep is alive. Run it alone on a 2-core machine (a concurrent test run slows it several times).
# Each finished cell is also written to docs/ssl_curve_cpu_run/cells/ (commit those records: a fresh
# machine restores them instead of training the cells again); the inits are the snapshots
# under runs/pretrain_dense_cpu*/snapshots/, not in git (see configs/ablation/ssl_curve_cpu.yaml).
#   bash pipelines/ssl_curve.sh                        # start or resume
#   grep -E "^\[|cell" runs/ssl_curve/log.txt | tail   # cells done so far
#   git add docs/ssl_curve_cpu_run && git commit -m "SSL curve: cell records"   # keep them
#   kill "$(cat runs/ssl_curve/pid)"                   # stop (re-run the script to resume)
# Extra arguments go to `histoclr ablate` as overrides of the sweep config.
set -euo pipefail
cd "$(dirname "$0")/.."
config=configs/ablation/ssl_curve_cpu.yaml
# the config's snapshot inits (one list: a new init is added there only)
for snap in $(.venv/bin/python -c 'import sys, yaml
print("\n".join(i.split(":", 1)[1] for i in yaml.safe_load(open(sys.argv[1]))["inits"] if i.startswith("simclr:")))' "$config"); do
    [[ -f $snap ]] || { echo "error: $snap is missing: finish its run of bash pipelines/pretrain_long.sh first (see configs/ablation/ssl_curve_cpu.yaml)"; exit 1; }
done
source pipelines/background.sh
TQDM_MININTERVAL=30 run_in_background runs/ssl_curve .venv/bin/python -m histoclr ablate "$config" "$@"
