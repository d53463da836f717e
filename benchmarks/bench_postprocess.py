"""Instance post-processing time per 1000 x 1000 image against the network's sliding-window forward.

    .venv/bin/python -m benchmarks.bench_postprocess [--model runs/instances/contour/best.pt] [--repeats 3]

On one MoNuSeg validation image (1000 x 1000 px at 0.25 um/px; a synthetic H&E-like image when
../shared/data is absent), in this one process with ``torch.set_num_threads(--threads)``:

* forward: ``sliding_window_predict`` of the model (``--model``: trained ``best.pt`` files, each with
  its stored post-processing, plus components for a binary one; default: a random DeepLabV3+
  ResNet-18, the CPU configuration, for each target), 192 px windows, overlap 0.25;
* post-processing: each method of :mod:`histoclr.seg.postprocess` on that output. The outputs of a
  random network are noise, which would make the watershed's work unrepresentative, so unless a
  trained model is given the post-processing runs on outputs made from the image's true nuclei
  (the classes / distance map of :mod:`histoclr.seg.targets`, softened with noise): the same amount
  of foreground, markers and boundaries as a good model's.

Time: the median of ``--repeats`` runs after a warm-up. Memory: ``tracemalloc``'s peak of the
post-processing (numpy and scikit-image allocations; it does not see torch's) and the process's peak
resident set (``ru_maxrss``) after all of it. The ratio is post-processing / forward. Writes the
section "Instance post-processing" of docs/benchmarks.md (``--no-doc`` to skip).
"""

from __future__ import annotations

import argparse
import resource
import shlex
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from histoclr.docs_sections import write_section
from histoclr.images import normalize_image
from histoclr.seg.model import build_seg_model, load_seg_checkpoint
from histoclr.seg.postprocess import default_params, instances_from_output
from histoclr.seg.predict import sliding_window_predict, split_output
from histoclr.seg.targets import contour_classes, normalized_distance

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SECTION = "Instance post-processing"


def load_image() -> tuple[np.ndarray, np.ndarray, str]:
    """``(rgb (H, W, 3) uint8, true instances (H, W), description)`` of one validation image."""
    pairs_csv = REPO / "data_manifests" / "monuseg2018_seg_pairs.csv"
    if SHARED.is_dir():
        from histoclr.manifests.pairs import read_pairs_manifest
        from histoclr.seg.dataset import load_pair

        pair = next(p for p in read_pairs_manifest(pairs_csv, SHARED) if p.split == "val")
        lp = load_pair(pair, 0.25)
        return lp.image, lp.instances, f"MoNuSeg {pair.image_id} at 0.25 um/px ({lp.image.shape[1]}x{lp.image.shape[0]})"
    from histoclr.seg.synthetic import synthetic_pair

    image, instances = synthetic_pair(1000, seed=0)
    return image, instances, "synthetic 1000x1000 H&E-like image (../shared/data absent)"


def oracle_output(instances: np.ndarray, target: str, rng) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities (and distance) made from the true nuclei, softened with uniform noise."""
    if target == "contour":
        c = contour_classes(instances, 2)
        onehot = np.stack([c == k for k in range(3)])
    else:
        onehot = np.stack([instances == 0, instances > 0])
    p = onehot.astype(np.float32) + rng.uniform(0, 0.3, onehot.shape).astype(np.float32)
    p /= p.sum(axis=0, keepdims=True)
    d = normalized_distance(instances) if target == "distance" else None
    return p, d


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()                                     # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[],
                    help="a trained best.pt, repeatable (default: random networks + oracle outputs)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--note", default="", help="a sentence about the machine's load, added to the doc")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    image, truth, source = load_image()
    x = normalize_image(image)

    cases = []
    for path in args.model:
        ck = load_seg_checkpoint(path)
        cases.append((ck.model.spec.target, ck.model, ck.postprocess, ck.window, True))
    if not args.model:
        for target in ("binary", "contour", "distance"):
            model = build_seg_model("resnet18", "deeplabv3plus", decoder_channels=128, target=target).eval()
            cases.append((target, model, default_params(target), 192, False))

    rows = []
    for target, model, params, window, trained in cases:
        fwd_s, out = timed(lambda: sliding_window_predict(model, x, window, 0.25, 4, "cpu", target), args.repeats)
        probs, dist = split_output(out, target) if trained else oracle_output(truth, target, rng)
        methods = [params.method] + (["components"] if target == "binary" else [])
        for method in methods:
            p = default_params(target, method=method) if method != params.method else params
            post_s, inst = timed(lambda: instances_from_output(probs, p, dist), args.repeats)
            tracemalloc.start()
            instances_from_output(probs, p, dist)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            rows.append({"target": target, "method": method, "forward_s": fwd_s, "post_s": post_s,
                         "ratio": post_s / fwd_s, "post_peak_mib": peak / 2**20, "nuclei": int(inst.max()),
                         "outputs": "trained model" if trained else "oracle (true nuclei + noise)"})
            print(rows[-1], flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    lines = [f"Image: {source}; {len(np.unique(truth)) - 1} true nuclei. Forward: DeepLabV3+ ResNet-18 "
             f"({'trained' if args.model else 'random weights'}), 192 px windows, overlap 0.25, batch 4, "
             f"{args.threads} torch thread(s). Median of {args.repeats} after a warm-up. {args.note}".rstrip(),
             "",
             "| target | post-processing | outputs | forward (s) | post-processing (s) | ratio post / forward | "
             "post-processing peak (MiB, tracemalloc) | nuclei found |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['method']} | {r['outputs']} | {r['forward_s']:.2f} | {r['post_s']:.2f} | "
                     f"{r['ratio']:.2f} | {r['post_peak_mib']:.0f} | {r['nuclei']} |")
    lines += ["", f"Peak resident set of the whole benchmark process: {rss:.0f} MiB."]
    body = "\n".join(lines)
    print(body)
    if not args.no_doc:
        write_section(SECTION, body, "python -m benchmarks.bench_postprocess "
                      + shlex.join(sys.argv[1:] if argv is None else argv))
    return rows


if __name__ == "__main__":
    main()
