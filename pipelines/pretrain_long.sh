#!/usr/bin/env bash
# The long CPU pretraining run of the shipped CPU config (configs/pretrain/cpu.yaml: dense crops at
# 0.25 um/px, ResNet-18, 2,000 steps, backbone snapshots at steps 250, 1000 and 2000 under
# runs/pretrain_dense_cpu/snapshots/). It runs in the background at nice 19 (idle CPU only) and
# logs to runs/pretrain_dense_cpu/log.txt (appended: a resumed run adds to it). Re-running this
# script after an interruption resumes from the last checkpoint (--resume auto, every 25 steps);
# it does nothing while the run is alive, or once the last snapshot (step 2000) exists.
#   bash pipelines/pretrain_long.sh                       # start or resume
#   tr '\r' '\n' < runs/pretrain_dense_cpu/log.txt | tail -3   # step, rate, ETA
#   kill "$(cat runs/pretrain_dense_cpu/pid)"             # stop (re-run the script to resume)
set -euo pipefail
cd "$(dirname "$0")/.."
last=runs/pretrain_dense_cpu/snapshots/backbone_step002000.pt
if [[ -f $last ]]; then  # the last snapshot is written at the last step: nothing left to resume
    echo "finished: $last exists (record: python pipelines/pretrain_record.py)"
    exit 0
fi
source pipelines/background.sh
TQDM_MININTERVAL=20 run_in_background runs/pretrain_dense_cpu nice -n 19 .venv/bin/python -m histoclr pretrain \
    -c configs/pretrain/cpu.yaml --resume auto
