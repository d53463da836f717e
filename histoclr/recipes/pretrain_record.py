"""The record of a long pretraining run, kept in docs/ (its weights stay out of git).

    python pipelines/pretrain_record.py --run-dir runs/pretrain_dense_cpu --out docs/pretrain_dense_cpu_run

From the run directory and its MLflow run (named in the snapshots' metadata) it writes into ``--out``:
``README.md`` (state, the held-out checks at every snapshot, how to resume), ``config.yaml``,
``dense_manifest.json``, ``log_tail.txt`` (the last progress lines, carriage returns resolved),
``holdout_vs_step.png`` (the label-free checks against the step) and each snapshot's
``embedding_map_stepNNNNNN.png``. Every number comes from the MLflow metrics or the files.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from histoclr.errors import HistoclrError
from histoclr.io import atomic_copy, atomic_write_text, sha256_file

SECTION = "Long dense SimCLR pretraining (CPU)"
HOLDOUT_METRICS = ("holdout_top1", "holdout_top1_random", "holdout_mean_rank", "holdout_mean_rank_random",
                   "holdout_tiles")


@dataclass
class Snapshot:
    step: int
    path: Path
    run_id: str
    git_commit: str
    sha256: str       # of the file: a rerun on a fresh work tree can be checked against the record


def snapshots(run_dir: Path) -> list[Snapshot]:
    """The run's backbone snapshots (``snapshots/backbone_step*.pt``), by step (the weights are
    memory-mapped, not deserialised; each file is read once, for its sha256)."""
    from histoclr.ssl.model import load_backbone

    out = []
    for p in sorted((run_dir / "snapshots").glob("backbone_step*.pt")):
        meta = load_backbone(p, weights=False).metadata
        out.append(Snapshot(int(meta["step"]), p, str(meta.get("run_id", "")), str(meta.get("git_commit", "")),
                            sha256_file(p)))
    return sorted(out, key=lambda s: s.step)


def checkpoint_step(run_dir: Path) -> int | None:
    """The step of ``checkpoints/last.pt`` (``None`` without one)."""
    from histoclr.ssl.trainer import load_checkpoint

    path = run_dir / "checkpoints" / "last.pt"
    return int(load_checkpoint(path)["step"]) if path.is_file() else None


def holdout_table(run_id: str, tracking_uri: str | None) -> dict[int, dict[str, float]]:
    """``{step: {metric: value}}`` of the held-out checks logged on the run."""
    from histoclr.tracking import metric_history

    table: dict[int, dict[str, float]] = {}
    for name, points in metric_history(run_id, HOLDOUT_METRICS, tracking_uri).items():
        for step, value in points:
            table.setdefault(int(step), {})[name] = float(value)
    return {s: m for s, m in sorted(table.items()) if "holdout_top1" in m}


def run_summary(run_dir: Path) -> str:
    """One sentence on what the run trained: model, steps, batch, views and the dense crops it saw."""
    import yaml

    cfg_path, man_path = run_dir / "config.yaml", run_dir / "dense_manifest.json"
    if not cfg_path.is_file():
        return ""
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    model, train = cfg.get("model", {}), cfg.get("train", {})
    text = (f"SimCLR {model.get('arch', '?')}, {train.get('max_steps', '?')} steps of batch "
            f"{train.get('batch_size', '?')}, {cfg.get('views', {}).get('image_size', '?')} px views")
    if man_path.is_file():
        import json

        man = json.loads(man_path.read_text())
        r = man.get("recipe", {})
        roles = [src.get("role") for src in man.get("sources", [])]
        text += (f", of fresh {r.get('crop_size')} px tissue crops at {r.get('mpp')} µm/px (tissue share >= "
                 f"{r.get('min_tissue')}) from {roles.count('train')} images and slides ({man.get('train_tissue_mm2')} mm² "
                 f"of tissue), {roles.count('holdout')} held out for the label-free checks; "
                 f"{len(man.get('excluded', []))} validation images of the segmentation split excluded")
    return text + "."


def checks_table(table: dict[int, dict[str, float]]) -> list[str]:
    """The held-out checks per snapshot step as Markdown lines (an intro sentence, then the table)."""
    nan = float("nan")
    lines = [("Label-free checks on the held-out crops at each snapshot (is a crop's own second view its "
              "nearest neighbour among all the held-out crops' views?), from the run's MLflow metrics:"), "",
             "| step | crops | top-1 | top-1, random init | mean rank | mean rank, random init |",
             "|---:|---:|---:|---:|---:|---:|"]
    for step, m in table.items():
        lines.append(f"| {step} | {int(m.get('holdout_tiles', 0))} | {m['holdout_top1']:.3f} | "
                     f"{m.get('holdout_top1_random', nan):.3f} | {m.get('holdout_mean_rank', nan):.1f} | "
                     f"{m.get('holdout_mean_rank_random', nan):.1f} |")
    return lines


def read_log(log: Path) -> str:
    """A tqdm log's text, each carriage-return redraw on its own line ("" without the file)."""
    return log.read_text(errors="replace").replace("\r", "\n") if log.is_file() else ""


def log_tail(text: str, lines: int = 12) -> str:
    """The last ``lines`` non-blank lines of a log's text (:func:`read_log`)."""
    return "\n".join([ln for ln in text.splitlines() if ln.strip()][-lines:]) + "\n" if text else ""


def log_facts(text: str) -> tuple[list[int], float | None]:
    """From a pretraining log's text (:func:`read_log`): the steps it was resumed at (``--resume
    auto`` lines) and the median seconds per step over all its progress lines (``None`` without any)."""
    resumes = [int(m) for m in re.findall(r"resume: .*starting at step (\d+)", text)]
    rates = sorted(float(m) for m in re.findall(r"([\d.]+)s/step", text))
    return [r for r in resumes if r > 0], (rates[len(rates) // 2] if rates else None)


def plot_holdout(table: dict[int, dict[str, float]], path: Path) -> Path:
    """Held-out top-1 and mean rank against the step, the random-init value as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = list(table)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, label in ((axes[0], "holdout_top1", "held-out top-1 (own view nearest)"),
                           (axes[1], "holdout_mean_rank", "held-out mean rank of own view")):
        ax.plot(steps, [table[s][key] for s in steps], "o-", label="pretrained")
        ax.plot(steps, [table[s].get(f"{key}_random", float("nan")) for s in steps], "k--", label="random init")
        ax.set_xlabel("pretraining step")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    from histoclr.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


@dataclass
class RunState:
    """What the record says of a run, read once: snapshots, checkpoint step, MLflow run, checks."""
    snaps: list[Snapshot]
    step: int | None
    run_id: str
    table: dict[int, dict[str, float]]


def read_run(run_dir: Path, tracking_uri: str | None = None) -> RunState:
    snaps = snapshots(run_dir)
    run_id = next((s.run_id for s in reversed(snaps) if s.run_id), "")
    return RunState(snaps, checkpoint_step(run_dir), run_id,
                    holdout_table(run_id, tracking_uri) if run_id else {})


def write_record(run_dir: str | Path, out: str | Path, *, tracking_uri: str | None = None,
                 resume_command: str = "bash pipelines/pretrain_long.sh",
                 record_command: str = "python pipelines/pretrain_record.py", note: str = "",
                 state: RunState | None = None) -> Path:
    """Write the record (see the module docstring) and return the README's path (``state``: the
    run as :func:`read_run` read it, read here when not given)."""
    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = state or read_run(run_dir, tracking_uri)
    snaps, step, run_id, table = state.snaps, state.step, state.run_id, state.table

    for name in ("config.yaml", "dense_manifest.json"):
        if (run_dir / name).is_file():
            atomic_copy(run_dir / name, out / name)
    log = read_log(run_dir / "log.txt")
    atomic_write_text(out / "log_tail.txt", log_tail(log))
    pictures = []
    if table:
        pictures.append(plot_holdout(table, out / "holdout_vs_step.png").name)
    for s in snaps:
        src = run_dir / "diagnostics" / f"step{s.step:06d}" / "embedding_map.png"
        if not src.is_file():  # the last step's checks are the run's end-of-run diagnostics
            src = run_dir / "diagnostics" / "embedding_map.png"
        if src.is_file():
            atomic_copy(src, out / f"embedding_map_step{s.step:06d}.png")
            pictures.append(f"embedding_map_step{s.step:06d}.png")

    cfg = {}
    if (run_dir / "config.yaml").is_file():
        import yaml

        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    max_steps = int(cfg.get("train", {}).get("max_steps", 0)) or None
    finished = step is not None and max_steps is not None and step >= max_steps
    lines = [f"# The long dense pretraining run ({'finished' if finished else 'in progress'})", "",
             (f"Run directory `{run_dir}` (weights not in git), MLflow run `{run_id or 'unknown'}`. "
              f"Last checkpoint: step **{step if step is not None else 'none'}**"
              + (f" of {max_steps}" if max_steps else "") + "."), "",
             ("Snapshots (`finetune-seg --init simclr:PATH` loads them strictly; their metadata names the "
              "step, the run, the git commit and the dense manifest; the sha256 tells whether a rerun on a "
              "fresh work tree made the same file):"), ""]
    lines += [f"- step {s.step}: `{s.path}` (commit {s.git_commit[:10]}, sha256 `{s.sha256}`)"
              for s in snaps] or ["- none yet"]
    lines += ["", *checks_table(table)]
    resumes, s_per_step = log_facts(log)
    lines += [""] + [f"![{p}]({p})" for p in pictures]
    if s_per_step is not None:
        lines += ["", f"From `log.txt`: median {s_per_step:.2f} s a step over its progress lines; "
                      + (f"resumed from a checkpoint at steps {', '.join(map(str, resumes))} (the crop sequence "
                         "depends only on (seed, sample index), so a resumed run sees the same crops)."
                         if resumes else "never resumed.")]
    lines += ["", ("Files here: `config.yaml` (the resolved config), `dense_manifest.json` (the sources, mpp, "
                   "tissue area, the excluded validation images and the crop recipe), `log_tail.txt` (the last "
                   "log lines)."),
              "", (f"Resume (or start on a fresh work tree, from step 0): `{resume_command}`. "
                   f"Refresh this record: `{record_command}`.")]
    if note:
        lines += ["", note]
    readme = out / "README.md"
    atomic_write_text(readme, "\n".join(lines) + "\n")
    return readme


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except HistoclrError as e:  # no run there, a corrupt snapshot, a run missing from the store: one line
        raise SystemExit(f"error: {e}") from None


def _without_note(argv: list[str]) -> list[str]:
    """The record's arguments less ``--note TEXT``: the command that refreshes it, short enough to quote."""
    out, skip = [], False
    for a in argv:
        if skip or a == "--note" or a.startswith("--note="):
            skip = a == "--note"
            continue
        out.append(a)
    return out


def _main(argv: list[str] | None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default="runs/pretrain_dense_cpu")
    ap.add_argument("--out", default="docs/pretrain_dense_cpu_run")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--note", default="", help="a paragraph appended to the README (speed, interruptions)")
    ap.add_argument("--section", default=SECTION, help="the docs/results.md section to write ('' for none)")
    ap.add_argument("--resume-command", default="bash pipelines/pretrain_long.sh",
                    help="how the run is resumed, quoted in the README (a run started with overrides: the same ones)")
    args = ap.parse_args(argv)
    argv = list(argv if argv is not None else sys.argv[1:])
    shipped = ap.get_default("run_dir")
    if Path(args.run_dir) != Path(shipped) and (args.out == ap.get_default("out") or args.section == SECTION):
        raise HistoclrError(f"--run-dir {args.run_dir} is not the shipped run ({shipped}): give it its own --out and "
                            "--section (or --section ''), so its record does not replace the shipped run's")
    state = read_run(Path(args.run_dir), args.tracking_uri)
    if not state.snaps or not state.run_id:  # a mistyped --run-dir must not overwrite the record with a blank one
        raise HistoclrError(f"{args.run_dir}: no backbone snapshots naming their MLflow run (snapshots/"
                            "backbone_step*.pt): is this a pretraining run directory?")
    readme = write_record(args.run_dir, args.out, tracking_uri=args.tracking_uri, note=args.note, state=state,
                          resume_command=args.resume_command,
                          record_command=shlex.join(["python", "pipelines/pretrain_record.py", *_without_note(argv)])
                          + (" --note '...' (the paragraph below)" if args.note else ""))
    print(readme.read_text())
    if args.section:
        from histoclr.docs_sections import RESULTS, write_section

        run_id, table = state.run_id, state.table
        rel = os.path.relpath(Path(args.out).resolve(), RESULTS.parent)
        body = [run_summary(Path(args.run_dir)), "", (f"`{args.run_dir}`, MLflow run `{run_id}`; last checkpoint step {state.step}. "
                f"The whole record (config, dense manifest, log tail, embedding maps, how to resume): "
                f"[{rel}/]({rel}/README.md)."), "", *checks_table(table)]
        if table:  # the plot exists only with checks to draw
            body += ["", f"![held-out checks against the step]({rel}/holdout_vs_step.png)"]
        command = shlex.join(["python", "pipelines/pretrain_record.py", *argv])
        write_section(args.section, "\n".join(body), command, doc=RESULTS)
        print(f"wrote {RESULTS}, section {args.section!r}")
