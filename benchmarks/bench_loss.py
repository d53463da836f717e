"""NT-Xent: histoclr's NTXentLoss vs the broadcast cosine-similarity formulation (UvA tutorial).

    .venv/bin/python -m benchmarks.bench_loss [--batches 256 1024] [--dim 128] [--repeats 5]

Each (implementation, batch) case runs in a fresh subprocess on the same seeded inputs
``z1, z2`` of shape ``(batch, dim)``, forward + backward:

* time: median wall time of up to ``--repeats`` runs after one warm-up run (fewer once a case
  has used ``--budget-s`` seconds), with ``torch.set_num_threads(--threads)``;
* memory: the process's peak resident set (``ru_maxrss``) reached during the first forward +
  backward, minus its resident size just before it. torch's CPU allocator hands large blocks
  straight back to the OS, so this is the extra memory the loss really needed. (``tracemalloc``
  does not see torch allocations.) If the process's earlier high-water mark (imports) was
  higher than what the loss needed, the number is an upper bound and is marked ``<=``.

Both must give the same loss value (checked, reported). A case whose estimated peak exceeds
``--max-mem-fraction`` of MemAvailable is skipped and says so (the broadcast one needs ~12 GiB
at N=1024, D=128). The table goes into
``docs/benchmarks.md`` (section "NT-Xent loss").
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from histoclr.docs_sections import write_section

REPO = Path(__file__).resolve().parents[1]
IMPLS = ("histoclr", "broadcast")


def broadcast_ntxent(z1, z2, temperature: float):
    """The UvA deep-learning tutorial's SimCLR loss: an O(N^2 * D) broadcast cosine matrix."""
    import torch
    import torch.nn.functional as F

    feats = torch.cat([z1, z2], dim=0)
    cos_sim = F.cosine_similarity(feats[:, None, :], feats[None, :, :], dim=-1)
    self_mask = torch.eye(cos_sim.shape[0], dtype=torch.bool, device=cos_sim.device)
    cos_sim = cos_sim.masked_fill(self_mask, -9e15)
    pos_mask = self_mask.roll(shifts=cos_sim.shape[0] // 2, dims=0)
    cos_sim = cos_sim / temperature
    nll = -cos_sim[pos_mask] + torch.logsumexp(cos_sim, dim=-1)
    return nll.mean()


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def run_case(impl: str, batch: int, dim: int, repeats: int, threads: int, budget_s: float,
             temperature: float = 0.5) -> dict:
    """One case in this process (called in a fresh subprocess by :func:`main`)."""
    import torch

    from histoclr.ssl.loss import NTXentLoss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    z1 = torch.randn(batch, dim)
    z2 = z1 + 0.5 * torch.randn(batch, dim)
    loss_fn = NTXentLoss(temperature) if impl == "histoclr" else (
        lambda a, b: broadcast_ntxent(a, b, temperature))

    def step() -> float:
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        loss = loss_fn(a, b)
        loss.backward()
        return loss.item()

    high_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_before = _rss_kib()
    value = step()
    high_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times: list[float] = []
    while len(times) < repeats and (not times or sum(times) < budget_s):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"impl": impl, "batch": batch, "dim": dim, "loss": value,
            "time_s": times[len(times) // 2], "runs": len(times),
            "peak_mib": (high_after - rss_before) / 1024,
            "upper_bound": high_after == high_before}


def _mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def _estimated_mib(impl: str, batch: int, dim: int) -> float:
    """Rough peak of one forward+backward (broadcast: ~6.2 (2N,2N,D) float32 tensors, measured)."""
    n2 = 2 * batch
    return (6.5 * n2 * n2 * dim if impl == "broadcast" else 8 * n2 * n2 + 16 * n2 * dim) * 4 / 2**20


def _subprocess_case(impl: str, batch: int, dim: int, repeats: int, threads: int, budget_s: float,
                     max_mem_fraction: float) -> dict:
    need, avail = _estimated_mib(impl, batch, dim), _mem_available_mib()
    if need > max_mem_fraction * avail:
        return {"impl": impl, "batch": batch, "dim": dim,
                "error": f"skipped: needs ~{need / 1024:.1f} GiB, {avail / 1024:.1f} GiB available "
                         f"(limit {max_mem_fraction:.0%}; shared machine)"}
    cmd = [sys.executable, "-m", "benchmarks.bench_loss", "--case", impl, str(batch),
           "--dim", str(dim), "--repeats", str(repeats), "--threads", str(threads),
           "--budget-s", str(budget_s)]
    proc = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"impl": impl, "batch": batch, "dim": dim,
                "error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt_mib(r: dict) -> str:
    return f"{'<= ' if r['upper_bound'] else ''}{r['peak_mib']:.1f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per case (at most)")
    p.add_argument("--budget-s", type=float, default=20.0,
                   help="stop repeating a case once its timed runs took this long")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads in each case")
    p.add_argument("--max-mem-fraction", type=float, default=0.5,
                   help="skip a case whose estimated peak exceeds this fraction of MemAvailable")
    p.add_argument("--case", nargs=2, metavar=("IMPL", "BATCH"), help=argparse.SUPPRESS)
    p.add_argument("--no-write", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    if args.case:
        impl, batch = args.case
        print(json.dumps(run_case(impl, int(batch), args.dim, args.repeats, args.threads, args.budget_s)))
        return

    from tqdm import tqdm

    results = {}
    cases = [(impl, b) for b in args.batches for impl in IMPLS]
    for impl, b in tqdm(cases, desc="cases", unit="case"):
        results[impl, b] = _subprocess_case(impl, b, args.dim, args.repeats, args.threads, args.budget_s,
                                            args.max_mem_fraction)

    lines = [("| batch N | views 2N | implementation | fwd+bwd time (ms) | peak extra RSS (MiB) | "
              "largest tensor (theory, MiB) | loss |"),
             "|---:|---:|---|---:|---:|---:|---:|"]
    summary = []
    for b in args.batches:
        n2 = 2 * b
        theory = {"histoclr": n2 * n2 * 4 / 2**20, "broadcast": n2 * n2 * args.dim * 4 / 2**20}
        for impl in IMPLS:
            r = results[impl, b]
            label = "NTXentLoss (one (2N,2N) matmul)" if impl == "histoclr" else \
                "broadcast F.cosine_similarity (2N,2N,D)"
            if "error" in r:
                lines.append(f"| {b} | {n2} | {label} | {r['error']} | | {theory[impl]:.1f} | |")
                continue
            lines.append(f"| {b} | {n2} | {label} | {1000 * r['time_s']:.1f} ({r['runs']} runs) | "
                         f"{_fmt_mib(r)} | {theory[impl]:.1f} | {r['loss']:.6f} |")
        h, br = results["histoclr", b], results["broadcast", b]
        if "error" not in h and "error" not in br:
            diff = abs(h["loss"] - br["loss"])
            summary.append(f"- N={b}: broadcast/NTXentLoss time ratio **{br['time_s'] / h['time_s']:.1f}x**, "
                           f"peak-memory ratio **{br['peak_mib'] / max(h['peak_mib'], 1e-9):.0f}x**; "
                           f"|loss difference| = {diff:.1e} ({'same value' if diff < 1e-4 else 'MISMATCH'})")
    body = "\n".join(lines) + "\n\n" + "\n".join(summary) + (
        f"\n\nForward + backward of the loss alone on inputs `(N, {args.dim})` float32, temperature 0.5, "
        f"median of up to {args.repeats} timed runs (fewer once a case used {args.budget_s:.0f} s) after a "
        f"warm-up, torch.set_num_threads({args.threads}) (the 2-core CPU was shared), each case in a fresh "
        "subprocess. Peak extra RSS = "
        "`ru_maxrss` during the first forward+backward minus the resident size just before it "
        "(`<=`: below the process's earlier high-water mark, so an upper bound). The CPU was shared "
        "with other engineers' jobs while this ran, so absolute times are noisy; the ratios come "
        "from the same run.\n")
    print(body)
    if not args.no_write:
        extra = " ".join(sys.argv[1:] if argv is None else argv)
        cmd = ".venv/bin/python -m benchmarks.bench_loss" + (f" {extra}" if extra else "")
        print(write_section("NT-Xent loss", body, cmd))


if __name__ == "__main__":
    main()
