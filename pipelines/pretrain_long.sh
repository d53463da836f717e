#!/usr/bin/env bash
# The long CPU pretraining run of the shipped CPU config (configs/pretrain/cpu.yaml: dense crops at
# 0.25 um/px, ResNet-18, 2,000 steps, backbone snapshots at steps 250, 1000 and 2000 under
# runs/pretrain_dense_cpu/snapshots/). It runs in the background at nice 19 (idle CPU only) and
# logs to runs/pretrain_dense_cpu/log.txt (appended: a resumed run adds to it). Re-running this
# script after an interruption resumes from the last checkpoint (--resume auto, every 25 steps);
# it does nothing while the run is alive, or once it has finished (its end-of-run checks,
# diagnostics/diagnostics.json, written after the last checkpoint: the last thing the run writes).
#   bash pipelines/pretrain_long.sh                       # start or resume
#   tr '\r' '\n' < runs/pretrain_dense_cpu/log.txt | tail -3   # step, rate, ETA
#   kill "$(cat runs/pretrain_dense_cpu/pid)"             # stop (re-run the script to resume)
# Extra arguments are config overrides; out_dir=DIR names another run (its own folder, pid and log):
#   bash pipelines/pretrain_long.sh out_dir=runs/pretrain_dense_cpu_4k train.max_steps=4000 \
#       'snapshots.steps=[1000,2000,3000]'              # a longer run beside the shipped one
set -euo pipefail
cd "$(dirname "$0")/.."
source pipelines/background.sh
run=runs/pretrain_dense_cpu
for arg in "$@"; do if [[ $arg == out_dir=* ]]; then run=${arg#out_dir=}; fi; done
if ! is_running $run && [[ -f $run/diagnostics/diagnostics.json && $run/diagnostics/diagnostics.json -nt $run/checkpoints/last.pt ]]; then
    echo "finished: $run/diagnostics/diagnostics.json is newer than the last checkpoint (record: python pipelines/pretrain_record.py --run-dir $run; another run than the shipped one also needs its own --out and --section)"
    exit 0
fi
TQDM_MININTERVAL=20 run_in_background $run nice -n 19 .venv/bin/python -m histoclr pretrain \
    -c configs/pretrain/cpu.yaml --resume auto "$@"
