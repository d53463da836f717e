"""Training-step time at fp32 against bf16 autocast + channels_last, on this machine's CPU.

Same process, same inputs, the project's own models and losses; model-only steps (forward,
loss, backward, AdamW step) on random tensors, so only the numerics and the memory layout differ:

1. SimCLR (``SimCLRModel`` ResNet-18, projection 512 -> 128, ``NTXentLoss`` t=0.2): 2 x 64 views
   of 96 px, as in configs/pretrain/cpu.yaml.
2. Fine-tuning (``SegNet`` DeepLabV3+ / ResNet-18, contour target, its own loss): batch 8 of
   192 px crops, as in configs/finetune/cpu.yaml.
3. Validation inference (the same ``SegNet``, eval, no grad): batch 4 of 192 px windows.

Each arm: ``--steps`` timed steps after ``--warmup``; the table gives the median. ratio = fp32 /
bf16: how many times faster bf16 + channels_last is. bf16 is only fast on CPUs with bf16 units
(``amx_bf16`` or ``avx512_bf16`` in lscpu); the table says which this CPU has.

    .venv/bin/python benchmarks/bench_precision.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from histoclr.docs_sections import write_section
from histoclr.precision import autocast
from histoclr.seg.losses import build_loss
from histoclr.seg.model import build_seg_model
from histoclr.ssl.loss import NTXentLoss
from histoclr.ssl.model import SimCLRModel


def cpu_bf16_units(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The bf16 units among the CPU flags of ``cpuinfo``: ``"amx_bf16, avx512_bf16"``, ... or ``"none"``."""
    flags = cpuinfo.read_text().split() if cpuinfo.exists() else []
    units = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return ", ".join(units) or "none"


def time_steps(step, steps: int, warmup: int) -> float:
    """Median seconds of ``step()`` over ``steps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def simclr_step(precision: str):
    """``(model, step)``: one SimCLR training step per ``step()`` call."""
    torch.manual_seed(0)
    model = SimCLRModel("resnet18", hidden_dim=512, out_dim=128)
    loss_fn = NTXentLoss(temperature=0.2)
    x = torch.randn(128, 3, 96, 96)
    if precision == "bf16":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)

    def step():
        with autocast("cpu", precision):        # the trainer's own context (histoclr.precision)
            _, z = model(x)
        loss = loss_fn(z[:64], z[64:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model, step


def seg_model(precision: str):
    torch.manual_seed(0)
    model = build_seg_model("resnet18", "deeplabv3plus", 16, 2, decoder_channels=128, target="contour")
    return model.set_compute(precision, channels_last=precision == "bf16")


def finetune_step(precision: str):
    """``(model, step)``: one fine-tuning step per ``step()`` call."""
    model = seg_model(precision).train()
    loss_fn = build_loss("contour")
    x = torch.randn(8, 3, 192, 192)
    y = {"classes": torch.randint(0, 3, (8, 192, 192))}
    opt = torch.optim.AdamW(model.parameters(), 1e-3)

    def step():
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model, step


def inference_step(precision: str):
    """``(model, step)``: one batch of validation inference per ``step()`` call."""
    model = seg_model(precision).eval()
    x = torch.randn(4, 3, 192, 192)

    def step():
        with torch.inference_mode():
            model(x)
    return model, step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-doc", action="store_true", help="print the table only")
    args = ap.parse_args(argv)
    rows = []
    for name, make in (("SimCLR step, 2 x 64 views of 96 px", simclr_step),
                       ("fine-tuning step, 8 crops of 192 px", finetune_step),
                       ("validation inference, 4 windows of 192 px", inference_step)):
        t = {p: time_steps(make(p)[1], args.steps, args.warmup) for p in ("32", "bf16")}
        rows.append(f"| {name} | {t['32']:.3f} | {t['bf16']:.3f} | {t['32'] / t['bf16']:.2f} |")
        print(rows[-1], flush=True)
    text = (f"bf16 units of this CPU: {cpu_bf16_units()}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; median of {args.steps} steps after {args.warmup} warm-up "
            "steps, in one process. bf16 = autocast to bfloat16 with channels_last weights and inputs "
            "(float32 weights, optimiser and loss).\n\n"
            "| step | fp32 (s) | bf16 + channels_last (s) | ratio fp32 / bf16 |\n|---|---:|---:|---:|\n"
            + "\n".join(rows) + "\n\nWhat the whole runs gave on this machine: `bash pipelines/pretrain_long.sh` "
            "(configs/pretrain/cpu.yaml, bf16) ran its 2,000 steps with real dense crops in 43 min 37 s; "
            "12 real steps of `histoclr pretrain -c configs/pretrain/cpu.yaml train.max_steps=12 "
            "train.checkpoint_every=0 snapshots.steps=[] out_dir=/tmp/pt` took 2.10 s a step with "
            "`train.precision=32 train.channels_last=false` and 1.21 s as shipped; the held-out checks at "
            "steps 250 / 1000 / 2000 matched the fp32 run's (docs/results.md).\n")
    if not args.no_doc:
        write_section("bf16 autocast vs fp32 (CPU training steps)", text,
                      ".venv/bin/python benchmarks/bench_precision.py")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
