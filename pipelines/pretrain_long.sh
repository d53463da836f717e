#!/usr/bin/env bash
# The long CPU pretraining run of the shipped CPU config (configs/pretrain/cpu.yaml: dense crops at
# 0.25 um/px, ResNet-18, 2,000 steps, backbone snapshots at steps 250, 1000 and 2000 under
# runs/pretrain_dense_cpu/snapshots/). It runs in the background at nice 19 (idle CPU only) and
# logs to runs/pretrain_dense_cpu/log.txt (appended: a resumed run adds to it). Re-running this
# script after an interruption resumes from the last checkpoint (--resume auto, every 25 steps);
# it does nothing while the run is alive.
#   bash pipelines/pretrain_long.sh                       # start or resume
#   tr '\r' '\n' < runs/pretrain_dense_cpu/log.txt | tail -3   # step, rate, ETA
#   kill "$(cat runs/pretrain_dense_cpu/pid)"             # stop (re-run the script to resume)
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/pretrain_dense_cpu
mkdir -p "$out"
if [[ -f $out/pid ]] && kill -0 "$(cat "$out/pid")" 2>/dev/null; then
    echo "already running: pid $(cat "$out/pid") (log: $out/log.txt)"
    exit 0
fi
TQDM_MININTERVAL=20 nice -n 19 nohup .venv/bin/python -m histoclr pretrain \
    -c configs/pretrain/cpu.yaml --resume auto >> "$out/log.txt" 2>&1 &
echo $! > "$out/pid"
echo "started: pid $! (log: $out/log.txt)"
